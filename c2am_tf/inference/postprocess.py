"""Inference helpers shared by extract_boxes, predict and export: maps -> boxes in image pixels."""

import cv2
import numpy as np

from c2am_tf.maps.boxes import best_box_per_threshold
from c2am_tf.maps.edges import edge_refined_mask
from c2am_tf.maps.foreground import foreground_mask
from c2am_tf.maps.geometry import scale_box


def map_to_box(score_map, threshold, width, height, band=0.0):
    """(box [x0, y0, x1, y1] in a (width x height) image, foreground fraction) for one map.

    The box is the largest contour's box at ``threshold`` (fraction of the map's
    maximum), or with ``band`` > 0 the mean of those boxes over the band (see
    ``c2am_tf.maps.boxes.best_box_per_threshold``), scaled from map pixels to image
    pixels on each axis; the foreground fraction is the share of map pixels above
    the cut-off.
    """
    score_map = np.clip(np.asarray(score_map, np.float32), 0, 1)
    h, w = score_map.shape
    box = best_box_per_threshold(score_map, [threshold], band=band)[0]
    fraction = float(np.mean(foreground_mask(score_map, threshold)))
    return scale_box(box, (w, h), (width, height)), fraction


def map_to_mask(score_map, threshold, width, height, image=None, refinement="none"):
    """Boolean (height, width) foreground mask of one map: the map resized bilinearly to the image,
    then the box rule's foreground test (``c2am_tf.maps.foreground.foreground_mask``) at ``threshold``.
    With ``image`` (uint8 (height, width, 3)) and a ``refinement`` of ``c2am_tf.maps.edges``, the resized map
    is first refined along the image's edges (a mask model stores its own: ``model.refinement``).

    >>> m = np.zeros((4, 4), np.float32); m[1:3, 0:2] = 1.0
    >>> mask = map_to_mask(m, 0.5, width=8, height=4)
    >>> mask.shape, bool(mask[2, 1]), bool(mask[2, 7])
    ((4, 8), True, False)
    """

    score_map = np.clip(np.asarray(score_map, np.float32), 0, 1)
    if image is not None and refinement != "none":

        if tuple(np.shape(image)[:2]) != (int(height), int(width)):
            raise ValueError(f"image is {np.shape(image)[:2]}, the mask ({int(height)}, {int(width)})")
        return edge_refined_mask(image, score_map, refinement, threshold)
    up = cv2.resize(score_map, (int(width), int(height)), interpolation=cv2.INTER_LINEAR)
    return foreground_mask(np.clip(up, 0, 1), threshold)
