"""dfr-edge: DFR anomaly segmentation, from training on good parts to edge deployment.

This top-level module stays import-light (no torch) so that `dfr_edge.runtime` can be used on a
box that has only numpy, OpenCV and one inference engine.
"""

__version__ = "0.1.0"
