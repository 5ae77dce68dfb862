"""Placeholder torchvision for timm on this machine (benchmarks only: never on a test path).

The package index has only CUDA torchvision wheels, whose ops do not load with CPU PyTorch.
timm imports torchvision names at module level; timm's ResNet forward never uses them. Every
torchvision submodule and name is a placeholder class that raises if instantiated.
"""
import importlib.abc
import importlib.machinery
import sys
import types


class _Meta(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Meta(name, (_Placeholder,), {})


class _Placeholder(metaclass=_Meta):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(f"placeholder torchvision: {type(self).__name__}")


class _Module(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Meta(name, (_Placeholder,), {})


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _Module(spec.name)

    def exec_module(self, module):
        module.__path__ = []


sys.meta_path.insert(0, _Finder())
__version__ = "0.0+placeholder"


def __getattr__(name):
    return _Meta(name, (_Placeholder,), {})
