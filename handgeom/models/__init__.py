"""The model layer: networks of the papers handgeom serves, composed of its ops."""

from handgeom.models.backbone import ResNet
from handgeom.models.dir import InteractingHandsNet
from handgeom.models.handobject import HandObjectNet
from handgeom.models.occupancy import HandOccupancyNet
from handgeom.models.siagcn import SIAGCN, SiaPoseHead, hand_graph_edges, heatmap_keypoints
from handgeom.models.siapose import SiaPose
from handgeom.models.uplift import SkeletonRefiner, TwoHandUplift

__all__ = ["InteractingHandsNet", "HandObjectNet", "ResNet", "HandOccupancyNet", "SIAGCN", "SiaPose", "SiaPoseHead", "hand_graph_edges",
           "heatmap_keypoints", "TwoHandUplift", "SkeletonRefiner"]
