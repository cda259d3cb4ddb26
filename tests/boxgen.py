"""Random box sets for the tests, drawn through hypothesis so failures shrink and replay."""
import torch
from hypothesis import strategies as st


@st.composite
def box_sets(draw, min_n=0, max_n=300, dtype=torch.float32):
    """(boxes[N, 4], scores[N]) with ties, duplicates and degenerate boxes mixed in."""
    n = draw(st.integers(min_n, max_n))
    seed = draw(st.integers(0, 2**31 - 1))
    extent = draw(st.sampled_from([16.0, 100.0, 1000.0]))
    tie_levels = draw(st.sampled_from([0, 1, 3, 10]))  # 0: continuous scores
    degenerate = draw(st.sampled_from([0.0, 0.1, 0.5]))
    duplicates = draw(st.sampled_from([0.0, 0.2]))
    integral = draw(st.booleans())  # integer coordinates make exact ties in IoU
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, 2, generator=g, dtype=torch.float64) * extent
    size = torch.rand(n, 2, generator=g, dtype=torch.float64) * extent * 0.3
    size = torch.where(torch.rand(n, 1, generator=g) < degenerate, torch.zeros_like(size), size)
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    if integral:
        boxes = boxes.round()
    if n > 1 and duplicates:
        dup = torch.rand(n, generator=g) < duplicates
        src = torch.randint(0, n, (n,), generator=g)
        boxes[dup] = boxes[src[dup]]
    if tie_levels:
        scores = torch.randint(0, tie_levels, (n,), generator=g).to(torch.float64) / tie_levels
    else:
        scores = torch.rand(n, generator=g, dtype=torch.float64)
    return boxes.to(dtype), scores.to(dtype)


thresholds = st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
