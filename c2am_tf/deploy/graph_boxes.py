"""The box rule in TensorFlow ops, for the graphs that carry it (the SavedModel's ``boxes``, TFLite): the
same boxes as ``c2am_tf.maps.boxes.best_box_per_threshold`` (OpenCV), as the tests measure on the golden maps.
"""

import tensorflow as tf

from c2am_tf.maps.geometry import band_thresholds


def _component_labels(mask, connectivity=8):
    """Component labels (B, H, W) int32 of a boolean mask (8- or 4-connected); 0 = background.

    Each foreground pixel starts with a unique label (larger for earlier pixels);
    a max filter (3x3, or the 4-neighbour cross) restricted to the mask spreads the
    largest label through each component until nothing changes (at most H * W rounds;
    a handful for blob-like maps).
    """
    shape = tf.shape(mask)
    n = shape[1] * shape[2]
    # Label = n + 1 - (raster index of the component's first pixel): the label
    # order is the reverse of OpenCV's discovery order, which decides its ties.
    ids = tf.reshape(tf.range(n, 0, -1, dtype=tf.float32), [1, shape[1], shape[2]])
    maskf = tf.cast(mask, tf.float32)
    labels = ids * maskf

    def spread(previous, _):
        if connectivity == 8:
            grown = tf.nn.max_pool2d(previous[..., None], 3, 1, "SAME")[..., 0]
        else:
            p = tf.pad(previous, [[0, 0], [1, 1], [1, 1]])
            grown = tf.reduce_max(tf.stack([previous, p[:, :-2, 1:-1], p[:, 2:, 1:-1], p[:, 1:-1, :-2],
                                            p[:, 1:-1, 2:]]), axis=0)
        labels = grown * maskf
        return labels, tf.reduce_any(tf.not_equal(labels, previous))

    labels, _ = tf.while_loop(lambda _, changed: changed, spread, (labels, tf.constant(True)),
                              maximum_iterations=n)
    return tf.cast(labels, tf.int32)


def boxes_from_maps_tf(maps, threshold, factor=1.0, band=0.0):
    """Graph version of ``best_box_per_threshold`` at one threshold for a batch: (B, H, W) -> (B, 4).

    With ``band`` > 0 (``threshold`` then a Python number), each box is the mean of the boxes at
    ``band_thresholds(threshold, band)``, as ``best_box_per_threshold`` computes it.
    """
    if not band:
        return _largest_contour_boxes_tf(maps, threshold, factor)
    boxes = [_largest_contour_boxes_tf(maps, t, factor) for t in band_thresholds(threshold, band)]
    return tf.add_n(boxes) / float(len(boxes))


def _largest_contour_boxes_tf(maps, threshold, factor=1.0):
    """Graph version of the single-contour ``boxes_from_map`` for a batch: (B, H, W) -> (B, 4).

    Same truncation to uint8 and float64 cut-off as the reference. The largest
    contour is found as the 8-connected component (holes filled) with the
    largest polygon area by Pick's theorem, pixels - contour passes / 2 - 1, where a
    pixel on a one-pixel neck or spur counts each time the contour passes through it:
    exactly the area ``cv2.contourArea`` measures through pixel centres. Runs in a
    SavedModel or TFLite graph; agreement with OpenCV is measured in the tests.
    """
    maps = tf.convert_to_tensor(maps, tf.float32)
    height, width = tf.shape(maps)[1], tf.shape(maps)[2]
    u8 = tf.cast(tf.cast(tf.clip_by_value(maps, 0.0, 1.0) * 255.0, tf.uint8), tf.float64)
    peak = tf.reduce_max(u8, axis=[1, 2], keepdims=True)
    cutoff = tf.floor(tf.cast(threshold, tf.float64) * peak)
    mask = u8 > cutoff
    # What an external contour encloses: everything but the background 4-connected to the image's
    # border (OpenCV's background connectivity beside 8-connected foreground). Holes, and components
    # inside them, belong to the enclosing region, as with RETR_EXTERNAL.
    outside = _component_labels(tf.logical_not(mask), connectivity=4)
    border_ids = tf.concat([outside[:, 0, :], outside[:, -1, :], outside[:, :, 0], outside[:, :, -1]], axis=1)
    is_outside = tf.logical_and(tf.logical_not(mask),
                                tf.reduce_any(tf.equal(outside[..., None], border_ids[:, None, None, :]), axis=-1))
    filled_labels = _component_labels(tf.logical_not(is_outside))
    # For each component: pixel count and the times its outer contour passes through each pixel (a
    # pixel at a one-pixel-wide neck or spur is passed twice): the number of background runs in the
    # cyclic 8-neighbourhood, a lone diagonal between two foreground 4-neighbours not counting.
    n = height * width
    flat = tf.reshape(filled_labels, [-1, n])
    padded = tf.pad(filled_labels, [[0, 0], [1, 1], [1, 1]])
    offsets = [(-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1)]  # N, NE, ..., NW
    neighbours = tf.stack([padded[:, 1 + dy:1 + dy + height, 1 + dx:1 + dx + width] for dy, dx in offsets], -1)
    outside = tf.not_equal(neighbours, filled_labels[..., None])
    runs = tf.reduce_sum(tf.cast(tf.logical_and(outside, tf.logical_not(tf.concat([outside[..., 7:], outside[..., :7]], -1))), tf.int32), -1)
    diagonal = tf.gather(outside, [1, 3, 5, 7], axis=-1)
    flanked = tf.logical_and(tf.logical_not(tf.gather(outside, [0, 2, 4, 6], axis=-1)),
                             tf.logical_not(tf.gather(outside, [2, 4, 6, 0], axis=-1)))
    lone = tf.reduce_sum(tf.cast(tf.logical_and(diagonal, flanked), tf.int32), -1)
    passes = tf.where(tf.reduce_all(outside, -1), 1, runs - lone)
    boundary = tf.reshape(tf.where(filled_labels > 0, passes, 0), [-1, n])
    one_hot = tf.one_hot(flat, n + 1, dtype=tf.float32)[:, :, 1:]  # (B, n, components)
    count = tf.reduce_sum(one_hot, axis=1)
    edge = tf.reduce_sum(one_hot * tf.cast(boundary, tf.float32)[..., None], axis=1)
    # OpenCV's contourArea is 0 for single pixels and lines; among equal areas it
    # keeps the contour discovered last, i.e. the smallest label here (argmax keeps the first).
    area = tf.where(count > 0, tf.maximum(count - edge / 2.0 - 1.0, 0.0), -1.0)
    best = tf.argmax(area, axis=1, output_type=tf.int32) + 1
    chosen = tf.equal(filled_labels, best[:, None, None])
    rows = tf.reduce_any(chosen, axis=2)
    cols = tf.reduce_any(chosen, axis=1)

    def extent(any_axis, size):
        idx = tf.range(size)[None, :]
        lo = tf.reduce_min(tf.where(any_axis, idx, size), axis=1)
        hi = tf.reduce_max(tf.where(any_axis, idx, -1), axis=1)
        return lo, tf.minimum(hi + 1, size - 1)

    y0, y1 = extent(rows, height)
    x0, x1 = extent(cols, width)
    boxes = tf.cast(tf.stack([x0, y0, x1, y1], axis=1), tf.float32)
    empty = tf.logical_not(tf.reduce_any(mask, axis=[1, 2]))
    return tf.where(empty[:, None], tf.zeros_like(boxes), boxes) * factor
