"""What a run shows while it trains: progress bar, TensorBoard scalars, profiler traces."""

import time

from keras_resnext import files
from keras_resnext.training import steps as steps_lib


def progress_bar(steps_per_epoch, *, verbose, done):
    """A ``keras.utils.Progbar`` of an epoch whose first ``done`` steps are trained."""
    import keras

    progbar = keras.utils.Progbar(steps_per_epoch, verbose=verbose,
                                  stateful_metrics=[*steps_lib.METRICS, "lr"])
    if done:
        progbar.update(done)
    return progbar


class Window:
    """The training scalars since the last TensorBoard write.

    Args:
        batch_size: the global batch (for images per second).
    """

    def __init__(self, batch_size):
        self.batch_size = batch_size
        self.restart()

    def restart(self):
        self.sums, self.steps, self.start = steps_lib.zero_sums(), 0, time.perf_counter()

    def add(self, sums):
        """Adds one step's ``metric_sums``."""
        self.steps += 1
        for k in self.sums:
            self.sums[k] += sums[k]

    def write(self, writer, step, lr):
        """Writes the means, ``lr`` and images/s at global ``step``; restarts."""
        import tensorflow as tf

        elapsed = time.perf_counter() - self.start
        with writer.as_default(step=step):
            for k in steps_lib.METRICS:
                tf.summary.scalar(k, self.sums[k] / self.sums["count"])
            tf.summary.scalar("learning_rate", lr)
            tf.summary.scalar("images_per_sec", self.steps * self.batch_size / elapsed)
        self.restart()


class Profiler:
    """The TF profiler over the global steps ``(first, last)``, into ``logs_dir``.

    Args:
        steps: ``(first, last)``, or ``None`` for no trace.
        logs_dir: the TensorBoard log directory.
    """

    def __init__(self, steps, logs_dir):
        self.steps, self.logs_dir = steps, logs_dir
        self.running = False

    def start_at(self, step):
        """Starts tracing if ``step`` (about to run) is the first traced step."""
        import tensorflow as tf

        if self.steps and step == self.steps[0]:
            tf.profiler.experimental.start(self.logs_dir)
            self.running = True

    def stop_after(self, step):
        """Stops tracing once ``step`` (just run) reached the last traced step."""
        if self.running and step >= self.steps[1]:
            self.stop()

    def stop(self):
        import tensorflow as tf

        if self.running:
            tf.profiler.experimental.stop()
            self.running = False


def write_epoch(writers, step, entry, logs_dir):
    """Writes an epoch's validation scalars and corrupt-image count; flushes both writers."""
    import tensorflow as tf

    train_writer, val_writer = writers
    with val_writer.as_default(step=step):
        for k in steps_lib.METRICS:
            tf.summary.scalar(k, entry["val_" + k])
    with train_writer.as_default(step=step):
        tf.summary.scalar("corrupt_images_skipped", entry["corrupt_images_skipped"])
    with files.writing("TensorBoard logs", logs_dir):
        train_writer.flush()
        val_writer.flush()


def epoch_line(epoch, entry):
    """The line printed at the end of ``epoch`` (0-based) for its history ``entry``."""
    return (f"epoch {epoch + 1}: loss {entry['loss']:.4f} top1 {entry['top1']:.4f} "
            f"val_loss {entry['val_loss']:.4f} val_top1 {entry['val_top1']:.4f} "
            f"val_top5 {entry['val_top5']:.4f} ({entry['images_per_sec']:.1f} img/s, "
            f"{entry['corrupt_images_skipped']} corrupt images skipped)")
