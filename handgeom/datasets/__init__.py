"""Training data: synthetic hand scenes posed with handgeom's hand model and rendered with its ray
casting, readers for the public datasets' annotation formats, and augmentation. Every dataset
returns the sample dict documented in :mod:`handgeom.datasets.sample` (the 2D readers of
:mod:`~handgeom.datasets.pose2d`: its 2D keys)."""

from handgeom.datasets.augment import Augment, photometric
from handgeom.datasets.dexycb import DexYCB
from handgeom.datasets.freihand import FreiHAND
from handgeom.datasets.ho3d import HO3D
from handgeom.datasets.interhand import InterHand26M
from handgeom.datasets.objects import OBJECT_CLASSES, SHAPES, YCB_OBJECTS, make_object
from handgeom.datasets.pose2d import MHPHands, PanopticHands
from handgeom.datasets.real import DatasetFormatError
from handgeom.datasets.synthetic import SyntheticHandObject, SyntheticInteractingHands, SyntheticSingleHand

__all__ = ["Augment", "photometric", "DexYCB", "FreiHAND", "HO3D", "InterHand26M", "MHPHands", "PanopticHands",
           "DatasetFormatError",
           "OBJECT_CLASSES", "SHAPES", "YCB_OBJECTS", "make_object", "SyntheticHandObject", "SyntheticInteractingHands", "SyntheticSingleHand"]
