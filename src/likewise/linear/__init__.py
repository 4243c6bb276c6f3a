"""Linear (Mahalanobis) metric learning as scikit-learn estimators.

Each estimator learns ``L`` (``components_``, ``[d, D]``) so that ``d_M(x, z) = ||L x - L z||`` with
``M = L^T L``: ``MMC`` (Xing et al. 2003), ``ITML`` (Davis et al. 2007), ``LMNN`` (Weinberger &
Saul 2009), ``NCA`` (Goldberger et al. 2004), and the baselines ``Covariance`` and ``Whitening``.
"""

from likewise.linear.base import MahalanobisTransformer
from likewise.linear.covariance import Covariance, Whitening
from likewise.linear.itml import ITML
from likewise.linear.lmnn import LMNN
from likewise.linear.mmc import MMC
from likewise.linear.nca import NCA
from likewise.linear.pairs import label_pairs

__all__ = ["ITML", "LMNN", "MMC", "NCA", "Covariance", "MahalanobisTransformer", "Whitening", "label_pairs"]
