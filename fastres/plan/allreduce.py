"""The all-reduce of a gradient bucket over a cluster: the alpha-beta cost of each algorithm.

S bytes over N = K nodes x L devices; B_intra: one device to its node (one direction),
B_node: one node's network links together (one direction); alpha: latency per message step.
Every algorithm adds one launch latency (NCCL's base latency) per collective:

  ring          NCCL's (or Gloo's) ring over all devices in rank order, one ring per channel:
                each node's links carry 2(N-1)/N S, each device's intra-node link as much;
                2(N-1) steps, 2(K-1) of them across the network:
                  base + (2(N-1) - 2(K-1)) alpha_intra + 2(K-1) alpha_inter
                       + 2(N-1)/N S / min(B_intra, B_node)   (each link at its own rate, the slower sets the pace)
  tree          NCCL's double binary tree across nodes, a chain inside each node; NCCL halves
                the data over two trees but discounts the tree's bandwidth (x TREE_BW):
                  base + 2 ((L-1) alpha_intra + log2(K) alpha_inter) + max(2 S / B_intra, 2 S / (TREE_BW B_node))
  flat          one all-reduce over all ranks as fastres's flat reducer issues it: NCCL picks ring
                or tree by its own cost model (the faster of the two here); Gloo runs the ring;
                MPI (Intel MLSL, the CPU records) the faster of the ring and recursive halving /
                doubling (Thakur, Rabenseifner & Gropp 2005: 2 log2(N) steps, ring bandwidth)
  hierarchical  fastres's reducer (fastres/distributed/reducer.py): reduce-scatter inside each
                node (a ring of L), then L concurrent all-reduces of the S/L shard across the K
                nodes (local rank i with local rank i; NCCL: ring or tree by NCCL's rule, Gloo:
                ring), sharing the node's links, then an all-gather inside the node:
                  2 [base + (L-1) alpha_intra + (L-1)/L S / B_intra] + flat(S/L over K nodes at B_node/L)
  2d-torus      Mikami et al. 2018 (arXiv:1811.05233) and Ying et al. 2018 (arXiv:1811.06992): the
                devices as an X x Y grid, reduce-scatter along X, all-reduce of the 1/X shard along
                Y as a ring, all-gather along X. On GPU nodes X = L (the node) and Y = K.

A TPU pod is no switched network: every chip has 4 ICI links, two per dimension of a 2-D torus
(Cluster.torus_links; fastres.plan.devices), and no node boundary matters. There the planner
costs what the wires allow, with B_link one link's bandwidth (one direction):

  2d-torus      X x Y chips (X the largest divisor of N up to sqrt(N)); each phase a ring along one
                dimension that runs both ways around it (its two links, 2 B_link), as Google's
                torus all-reduce does rows, then columns:
                  2 [base + (X-1) alpha + (X-1)/X S / 2B_link] + base + 2(Y-1) alpha + 2(Y-1)/Y (S/X) / 2B_link
  ring          one ring through all N chips (a path of torus neighbours), both ways: 2(N-1) steps
                  base + 2(N-1) alpha + 2(N-1)/N S / 2B_link
  tree, flat, hierarchical
                not on a torus: NCCL's tree needs a switch, and no node sits between the chips; the
                planner refuses them there (TORUS_ALGORITHMS)

One node: every algorithm is the ring inside it. The NCCL constants are NCCL's own tuning model
(NVIDIA/nccl src/graph/tuning.cc, Simple protocol): base latency 8.4 us, 3.4 us per NVLink ring
step, 4.0 us per NVLink tree step, 5.7 us per PCIe ring step, 14 us per network step; tree
bandwidth x 0.85. Gloo's alpha and bandwidth come from bench/bench_hosts.py (--calibrate).
"""

from __future__ import annotations

import math

__all__ = [
    "ALGORITHMS",
    "TORUS_ALGORITHMS",
    "NCCL_BASE_S",
    "NCCL_NET_STEP_S",
    "NCCL_NVLINK_STEP_S",
    "NCCL_PCIE_STEP_S",
    "TREE_BW",
    "algorithms_for",
    "allreduce_seconds",
]

ALGORITHMS = ("ring", "tree", "flat", "hierarchical", "2d-torus")
TORUS_ALGORITHMS = ("ring", "2d-torus")
NCCL_BASE_S = 8.4e-6  # tuning.cc baseLatencies, Ring/Tree, Simple
NCCL_NVLINK_STEP_S = 3.4e-6  # hwLatencies[NVLINK][Ring][Simple] (Tree: 4.0)
NCCL_NVLINK_TREE_STEP_S = 4.0e-6
NCCL_PCIE_STEP_S = 5.7e-6  # hwLatencies[PCI][Ring][Simple]
NCCL_NET_STEP_S = 14e-6  # hwLatencies[NET][Ring and Tree][Simple]
TREE_BW = 0.85  # tuning.cc: tree busBw *= .85


def _ring(n: int, k: int, s: float, b_intra: float, b_node: float, a_in: float, a_out: float, base: float) -> float:
    if n <= 1:
        return 0.0
    l = n // k
    steps, net_steps = 2 * (n - 1), (2 * (k - 1) if k > 1 else 0)
    lat = base + (steps - net_steps) * a_in + net_steps * a_out
    per_link = 2 * (n - 1) / n * s
    t_intra = per_link / b_intra if l > 1 else 0.0
    t_net = per_link / b_node if k > 1 else 0.0
    return lat + max(t_intra, t_net)


def _tree(n: int, k: int, s: float, b_intra: float, b_node: float, a_in: float, a_out: float, base: float) -> float:
    if k <= 1:
        return _ring(n, k, s, b_intra, b_node, a_in, a_out, base)
    l = n // k
    lat = base + 2 * ((l - 1) * a_in + math.log2(k) * a_out)
    return lat + max(2 * s / b_intra if l > 1 else 0.0, 2 * s / (TREE_BW * b_node))


def _halving_doubling(n: int, k: int, s: float, b_intra: float, b_node: float, a_out: float, base: float) -> float:
    l = n // k
    per_link = 2 * (n - 1) / n * s
    return base + 2 * math.log2(n) * a_out + max(per_link / b_intra if l > 1 else 0.0, per_link / b_node)


def _flat(c, n: int, k: int, s: float, b_intra: float, b_node: float, a_in: float, a_out: float) -> float:
    ring = _ring(n, k, s, b_intra, b_node, a_in, a_out, c.base_s)
    if c.backend == "mpi" and k > 1:
        return min(ring, _halving_doubling(n, k, s, b_intra, b_node, a_out, c.base_s))
    if c.backend != "nccl":
        return ring
    tree = _tree(n, k, s, b_intra, b_node, c.intra_tree_alpha_s, a_out, c.base_s)
    return min(ring, tree)


def _grid_x(devices: int) -> int:
    """X of an X x Y grid of `devices`: the largest divisor up to the square root."""
    x = int(math.isqrt(devices))
    while devices % x:
        x -= 1
    return x


def algorithms_for(c) -> tuple[str, ...]:
    """The all-reduces cluster `c` can run: all of ALGORITHMS on a switched network, TORUS_ALGORITHMS on a torus."""
    return TORUS_ALGORITHMS if c.torus_links else ALGORITHMS


def _torus(c, nbytes: float, algorithm: str) -> float:
    """A 2-D torus of chips, two links per dimension: each ring runs both ways around its dimension."""
    if algorithm not in TORUS_ALGORITHMS:
        raise ValueError(f"a 2-D torus runs {' or '.join(TORUS_ALGORITHMS)}, not {algorithm!r}: it has no switch")
    n, a, base = c.devices, c.inter_alpha_s, c.base_s
    b = (c.torus_links // 2) * c.intra_gbps * 1e9 / 8  # a dimension's links, both ways around its ring
    if algorithm == "ring":
        return base + 2 * (n - 1) * a + 2 * (n - 1) / n * nbytes / b
    x = _grid_x(n)
    y = n // x
    along_x = base + (x - 1) * a + (x - 1) / x * nbytes / b if x > 1 else 0.0
    along_y = base + 2 * (y - 1) * a + 2 * (y - 1) / y * (nbytes / x) / b if y > 1 else 0.0
    return 2 * along_x + along_y


def allreduce_seconds(c, nbytes: float, algorithm: str) -> float:
    """One all-reduce of `nbytes` over cluster `c` (fastres.plan.cost.Cluster) with `algorithm`."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    n, k, l = c.devices, c.nodes, c.per_node
    if n == 1:
        return 0.0
    if c.torus_links:
        return _torus(c, nbytes, algorithm)
    b_intra, b_node = c.intra_gbps * 1e9 / 8, c.inter_gbps * 1e9 / 8
    a_in, a_out, base = c.intra_alpha_s, c.inter_alpha_s, c.base_s
    if k == 1 or algorithm == "ring":
        return _ring(n, k, nbytes, b_intra, b_node, a_in, a_out, base)
    if algorithm == "tree":
        return _tree(n, k, nbytes, b_intra, b_node, c.intra_tree_alpha_s, a_out, base)
    if algorithm == "flat":
        return _flat(c, n, k, nbytes, b_intra, b_node, a_in, a_out)
    if algorithm == "hierarchical":
        if l == 1:
            return _flat(c, n, k, nbytes, b_intra, b_node, a_in, a_out)
        node_phase = base + (l - 1) * a_in + (l - 1) / l * nbytes / b_intra
        across = _flat(c, k, k, nbytes / l, b_intra, b_node / l, a_in, a_out)
        return 2 * node_phase + across
    # 2d-torus on GPU nodes: X = the node, Y = the nodes
    if l > 1:
        x, b_x, a_x, b_y = l, b_intra, a_in, b_node / l
    else:
        x, b_x, a_x, b_y = _grid_x(n), b_node, a_out, b_node
    y = n // x
    along_x = base + (x - 1) * a_x + (x - 1) / x * nbytes / b_x if x > 1 else 0.0
    along_y = _ring(y, y, nbytes / x, b_y, b_y, a_out, a_out, base) if y > 1 else 0.0
    return 2 * along_x + along_y
