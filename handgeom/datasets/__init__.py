"""Training data: synthetic hand scenes posed with handgeom's hand model and rendered with its ray
casting, readers for the public datasets' annotation formats, and augmentation. Every dataset
returns the sample dict documented in :mod:`handgeom.datasets.sample`."""

from handgeom.datasets.augment import Augment, photometric
from handgeom.datasets.objects import OBJECT_CLASSES, make_object
from handgeom.datasets.synthetic import SyntheticHandObject, SyntheticInteractingHands, SyntheticSingleHand

__all__ = ["Augment", "photometric", "OBJECT_CLASSES", "make_object", "SyntheticHandObject",
           "SyntheticInteractingHands", "SyntheticSingleHand"]
