"""Applications built on node correspondence: shape statistics, the
correspondence metric, tracking, head circumference and cross-slice surfaces.

Every module here is host-side numpy and works on plain arrays of node
positions `(x, y)` in pixels, so it applies to any model's output.
"""
