"""tfds datasets read only where they are prepared: a clear error at once instead of minutes of download retries."""

import tensorflow as tf

from c2am_tf.data.sharding import shard_dataset


class TfdsNotPreparedError(FileNotFoundError):
    """A tfds dataset that has not been downloaded and prepared (nothing is downloaded here)."""


def prepared_tfds_split(name, split, data_dir=None, download=False, hint="", shard=None):
    """tfds dataset ``name``'s ``split`` when it is prepared (or ``download``, online); otherwise
    ``TfdsNotPreparedError`` at once, with ``hint``, instead of retrying downloads for minutes.

    ``shard``: this input pipeline reads its own tfds files; with fewer files than pipelines,
    every pipeline reads all files and keeps its share of the examples.
    """
    import tensorflow_datasets as tfds  # the optional tensorflow-datasets, only for a tfds source

    builder = tfds.builder(name, data_dir=data_dir)
    if download:
        builder.download_and_prepare()
    try:
        if shard is None:
            return builder.as_dataset(split=split)
        context = tf.distribute.InputContext(num_input_pipelines=shard.count, input_pipeline_id=shard.index)
        try:
            return builder.as_dataset(split=split, read_config=tfds.ReadConfig(input_context=context))
        except ValueError:  # fewer files than pipelines
            return shard_dataset(builder.as_dataset(split=split), shard)
    except (AssertionError, FileNotFoundError, tfds.core.registered.DatasetNotFoundError) as e:
        raise TfdsNotPreparedError(f"tfds {name!r} is not prepared{' in ' + str(data_dir) if data_dir else ''} "
                                   f"({e}). {hint}") from None
