"""Training data: synthetic hand scenes posed with handgeom's hand model and rendered with its ray
casting, readers for the public datasets' annotation formats, and augmentation. Every dataset
returns the sample dict documented in :mod:`handgeom.datasets.sample`."""
