"""DDT baseline (Wei et al., "Unsupervised object discovery and co-localization by deep
descriptor transformation"): the first principal component of backbone descriptors.

Fit: the mean descriptor and the covariance of every spatial descriptor of the
training images (streamed, float64). Predict: project each descriptor on the
first principal direction after subtracting the mean; positive projections
are the object. Box: the largest positive connected component of the
projection map, upsampled to the image.
"""

import cv2
import numpy as np


class DDT:
    """Streaming DDT: ``update`` with feature batches, then ``fit``, then ``project``/``boxes``.

    Example:
    >>> ddt = DDT()
    >>> ddt.update(np.random.rand(2, 4, 4, 8))
    >>> ddt = ddt.fit()
    >>> ddt.project(np.random.rand(1, 4, 4, 8)).shape
    (1, 4, 4)
    """

    def __init__(self):
        self.count = 0
        self._sum = None
        self._outer = None
        self.mean = None
        self.direction = None

    def update(self, features):
        """Adds a batch of feature maps (B, h, w, C)."""
        x = np.asarray(features, np.float64).reshape(-1, np.shape(features)[-1])
        if self._sum is None:
            self._sum = np.zeros(x.shape[1])
            self._outer = np.zeros((x.shape[1], x.shape[1]))
        self._sum += x.sum(axis=0)
        self._outer += x.T @ x
        self.count += x.shape[0]

    def fit(self):
        """Computes the mean and the first principal direction of everything seen."""
        if not self.count:
            raise ValueError("DDT.fit: no features were added (call update first)")
        self.mean = self._sum / self.count
        cov = self._outer / self.count - np.outer(self.mean, self.mean)
        _, vectors = np.linalg.eigh(cov)
        self.direction = vectors[:, -1]
        return self

    def orient(self, maps):
        """Flips the direction so that projections are lower on map borders than inside.

        The eigenvector's sign is arbitrary; objects rarely fill the border.
        ``maps`` are projections (B, h, w) computed with the current direction.
        """
        maps = np.asarray(maps)
        border = np.concatenate([maps[:, 0], maps[:, -1], maps[:, :, 0], maps[:, :, -1]], axis=1)
        if border.mean() > maps[:, 1:-1, 1:-1].mean():
            self.direction = -self.direction
        return self

    def project(self, features):
        """Projection maps (B, h, w): (descriptor - mean) . first principal direction."""
        if self.direction is None:
            raise ValueError("DDT.project: call fit first")
        x = np.asarray(features, np.float64)
        return ((x - self.mean) @ self.direction).astype(np.float32)

    @staticmethod
    def box(projection, size):
        """Box (x0, y0, x1, y1) in a (size x size) image of the largest positive component."""
        up = cv2.resize(np.asarray(projection, np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
        positive = (up > 0).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(positive, connectivity=8)
        if n <= 1:
            return np.zeros(4, np.float32)
        best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        x, y, w, h = stats[best, :4]
        return np.array([x, y, x + w, y + h], np.float32)
