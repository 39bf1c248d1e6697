"""Pictures: heatmap overlays with boxes, and grids of examples."""

import cv2
import numpy as np

from c2am_tf.utils.files import write_atomically


def overlay(image, score_map, boxes=(), gt_boxes=(), alpha=0.5):
    """RGB uint8 picture: ``image`` (H, W, 3) under a JET heatmap of ``score_map``.

    ``score_map`` (h, w) in [0, 1] is resized to the image; ``boxes`` (green)
    and ``gt_boxes`` (red) are (x0, y0, x1, y1) in image pixels.
    """
    image = np.asarray(image, np.uint8)
    h, w = image.shape[:2]
    m = np.clip(np.asarray(score_map, np.float32), 0, 1)
    m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap((m * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    out = (image.astype(np.float32) * (1 - alpha) + heat.astype(np.float32) * alpha).astype(np.uint8)
    out = np.ascontiguousarray(out)
    thickness = max(1, round(min(h, w) / 160))
    for colour, group in (((255, 0, 0), gt_boxes), ((0, 255, 0), boxes)):
        for box in np.asarray(group, np.float32).reshape(-1, 4):
            if not np.isfinite(box).all():  # a picture must never end a run: draw what can be drawn
                continue
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            cv2.rectangle(out, (x0, y0), (x1, y1), colour, thickness)
    return out


def grid(pictures, columns=4, pad=2):
    """Tiles same-sized RGB pictures into one image (white padding)."""
    pictures = [np.asarray(p, np.uint8) for p in pictures]
    if not pictures:
        raise ValueError("grid needs at least one picture")
    h, w = pictures[0].shape[:2]
    rows = -(-len(pictures) // columns)
    cols = min(columns, len(pictures))
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, p in enumerate(pictures):
        r, c = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y:y + h, x:x + w] = cv2.resize(p, (w, h)) if p.shape[:2] != (h, w) else p
    return out


def write_png(path, rgb):
    """Writes an RGB (H, W, 3) or grayscale (H, W) uint8 picture as PNG, atomically (creates the folder)."""

    picture = np.asarray(rgb, np.uint8)
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(picture if picture.ndim == 2 else picture[..., ::-1]))
    if not ok:
        raise ValueError(f"{path}: cannot encode the picture as PNG")
    write_atomically(path, encoded.tobytes())
