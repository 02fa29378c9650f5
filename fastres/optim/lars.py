"""FusedLARS and FusedSGD: one fused step for all of a model's tensors, no host sync.

A naive LARS (apex's LARC) loops in Python over ResNet-50's 161 tensors and syncs the host
for every trust ratio. Here parameters, gradients and momentum live in fastres.kernels.flat buffers
and a step is one call into fastres._C (csrc/lars.h): on a GPU two launches (squared norms
of w and g per chunk; the update, which forms each segment's trust ratio on the device),
on CPU three OpenMP loops. lr, weight decay, momentum and eta are read from a small device
tensor that `step()` refreshes from `param_groups` (a device-side fill when lr changed), so
an LR schedule that writes group["lr"] each step costs no sync and no recompilation.

The update (docs/design.md, decision 5), per tensor (segment), with wd = 0 for tensors without decay and
trust = 1 for tensors without adaptation (by default: ndim <= 1, i.e. BN and biases):

    trust = eta * ||w|| / (||g|| + wd * ||w|| + eps), or 1 if ||w|| = 0 or ||g|| = 0
    g'    = g + wd * w
    lr_inside_momentum=True (MLPerf, FusedLARS's default):   m = mu * m + lr * trust * g'
                                                             w = w - m
    lr_inside_momentum=False (timm's Lars, torch's SGD):     m = mu * m + trust * g'
                                                             w = w - lr * m
    nesterov: w = w - (lr * trust * g' + mu * m)  resp.  w = w - lr * (trust * g' + mu * m)

The two conventions agree while lr is constant and differ when it changes (MLPerf's keeps
the momentum in units of a step). FusedSGD is the same step with trust = 1; its default is
torch's convention, so it is a drop-in for torch.optim.SGD(momentum=mu) (same state_dict
keys: "momentum_buffer").

RMSprop warm-up (Akiba, Suzuki & Fukuda 2017, arXiv:1711.04325, sec. 2.2): while the param
groups' "rmsprop_blend" (alpha_RMSprop = 1 - alpha_SGD, set each step from the schedule's
`rmsprop_blend(step)`) is above 0, the fused step itself (mode bit ops.STEP_RMSPROP, csrc/lars.h)
keeps RMSprop's v = beta * v + (1 - beta) * g'^2 in one more flat buffer and uses the
per-element coefficient c = (1 - blend) * lr * trust + blend * r / (sqrt(v) + eps_rms) of g'
in the momentum update, with r the group's "rmsprop_lr" (RMSprop's own rate; default: the
group's lr). At blend 0 (the default) v is neither read nor written.

Cached weight norms (LARS, native kernels): the update also sums w_new^2 per chunk, in the
order of additions of the norm pass, so the next step reads only g in its norm pass (6
instead of 7 passes over the 102 MB buffers of ResNet-50). The cache is used only while
the parameters' version counters are unchanged: in-place writes through the parameters or
the flat buffer (load_state_dict, nn.init, torch.no_grad() ops) invalidate it, but writes
through `p.data` cannot be seen: call `invalidate_norm_cache()` after those. Cached and fresh
norms are bit-identical, so this changes no result.

Non-finite gradients: `step(found_inf=t)` with t a device scalar (e.g. from a GradScaler
or torch.isfinite of the gradient norm) makes the step a no-op when t != 0: parameters and
momentum are untouched, the first step included.
"""

from __future__ import annotations

import torch

from fastres.kernels import ops
from fastres.kernels.flat import FlatParams

__all__ = ["FusedLARS", "FusedSGD"]


def _check_hparam(name: str, value, low: float = 0.0, high: float | None = None, where: str = "") -> None:
    if isinstance(value, torch.Tensor):
        return  # a device lr tensor: not checked (it would sync)
    if not isinstance(value, (int, float)) or value != value or value < low or (high is not None and value >= high):
        bound = f">= {low:g}" if high is None else f"in [{low:g}, {high:g})"
        raise ValueError(f"{name}{where}: must be {bound}, got {value!r}")


class _FusedMomentum(torch.optim.Optimizer):
    """The one signature and step of FusedLARS and FusedSGD; the subclasses set only what differs:
    whether the trust ratio applies (`_lars`), the default convention and weight-decay default."""

    _lars = True
    _lr_inside_momentum = True  # the convention when lr_inside_momentum is not given

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
        eps: float = 0.0,
        *,
        nesterov: bool = False,
        lr_inside_momentum: bool | None = None,
        layout: FlatParams | None = None,
        backend: str = "auto",
        rmsprop_beta: float = 0.99,
        rmsprop_eps: float = 1e-8,
        rmsprop_lr: float | None = None,
    ):
        if lr_inside_momentum is None:
            lr_inside_momentum = self._lr_inside_momentum
        if not self._lars:
            eta = eps = 0.0  # no trust ratio: eta and eps take no part
        _check_hparam("lr", lr)
        _check_hparam("momentum", momentum, 0.0, 1.0)
        _check_hparam("weight_decay", weight_decay)
        _check_hparam("eta", eta)
        _check_hparam("eps", eps)
        if backend not in ("auto", "native", "rtc", "torch"):
            raise ValueError(f"backend: must be auto, native, rtc or torch, got {backend!r}")
        _check_hparam("rmsprop_beta", rmsprop_beta, 0.0, 1.0)
        _check_hparam("rmsprop_eps", rmsprop_eps)
        if rmsprop_lr is not None:
            _check_hparam("rmsprop_lr", rmsprop_lr)
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            eta=eta,
            adapt=None,
            decay=None,
            rmsprop_blend=0.0,
            rmsprop_lr=rmsprop_lr,
        )
        self.rmsprop_beta, self.rmsprop_eps = float(rmsprop_beta), float(rmsprop_eps)
        self.rmsprop_sq_avg: torch.Tensor | None = None  # allocated by the first blended step
        self._ready = False
        super().__init__(params, defaults)
        self.eps = float(eps)
        self.mode = (
            (ops.STEP_LARS if self._lars else 0)
            | (0 if lr_inside_momentum else ops.STEP_LR_AFTER_MOMENTUM)
            | (ops.STEP_NESTEROV if nesterov else 0)
        )
        plist = [p for g in self.param_groups for p in g["params"]]
        if layout is None:  # the parameters are not in a layout yet: this optimizer makes their one layout
            layout = FlatParams(plist)
        self.layout = layout
        index = {id(p): i for i, p in enumerate(layout.param_list)}
        if len(plist) != layout.num_segments or any(id(p) not in index for p in plist):
            raise ValueError("layout: must hold exactly the optimizer's parameters")
        self._seg_of = [[index[id(p)] for p in g["params"]] for g in self.param_groups]
        dev = layout.device
        # ops.fused_step picks the implementation; `backend` is passed on as a forced path
        self._path = backend
        try:
            path = ops.path_for("fused_step", dev, backend).path
        except RuntimeError as e:
            raise RuntimeError(f"backend={backend!r}: {e}") from None
        self._native = path != "torch"  # the kernels (native or run-time compiled) cache the w norms
        self.momentum_buffer = layout.new_buffer()
        self._mom_views = layout.views(self.momentum_buffer)
        self._hparams = torch.zeros(len(self.param_groups) * ops.HPARAM_STRIDE, dtype=torch.float32, device=dev)
        C = layout.chunks.num_chunks if layout.chunks is not None else 0
        self._partials = [torch.zeros(max(2 * C, 1), device=dev), torch.zeros(max(2 * C, 1), device=dev)]
        self._build_segments()
        self._point_state_at_views()
        self._ready = True

    # ------------------------------------------------------------------ set-up

    def add_param_group(self, param_group):
        if getattr(self, "_ready", False):
            raise RuntimeError(f"{type(self).__name__}: parameter groups are fixed once the flat layout is built")
        super().add_param_group(param_group)

    def _build_segments(self) -> None:
        S = self.layout.num_segments
        group = torch.zeros(S, dtype=torch.int32)
        adapt, decay = self.layout.adapt.clone(), self._default_decay()
        for k, (g, segs) in enumerate(zip(self.param_groups, self._seg_of)):
            for s in segs:
                group[s] = k
                if g.get("adapt") is not None:
                    adapt[s] = bool(g["adapt"])
                if g.get("decay") is not None:
                    decay[s] = bool(g["decay"])
        flags = adapt.int() * ops.SEG_ADAPT + decay.int() * ops.SEG_DECAY
        dev = self.layout.device
        self._seg_group = group.to(dev)
        self._seg_flags = flags.to(torch.int32).to(dev)
        self._hp_cache: list = [None] * len(self.param_groups)
        self.invalidate_norm_cache()

    def _default_decay(self) -> torch.Tensor:
        """Per-segment weight-decay flags before param-group overrides: LARS's, none on ndim <= 1."""
        return self.layout.decay.clone()

    def invalidate_norm_cache(self) -> None:
        """Make the next LARS step compute ||w|| afresh (needed after writes through p.data)."""
        self._wsq_version: int | None = None

    def _param_version(self) -> int:
        return self.layout.params._version + sum(p._version for p in self.layout.param_list)

    def _point_state_at_views(self) -> None:
        for segs, g in zip(self._seg_of, self.param_groups):
            for s, p in zip(segs, g["params"]):
                self.state[p]["momentum_buffer"] = self._mom_views[s]

    # ------------------------------------------------------------------ step

    def _refresh_hparams(self) -> None:
        """Write changed group values into the device hparams (fills: no host sync)."""
        hp = self._hparams
        for k, g in enumerate(self.param_groups):
            where = f" (param group {k})"
            base = k * ops.HPARAM_STRIDE
            lr = g["lr"]
            rate = g.get("rmsprop_lr")
            vals = (
                g["weight_decay"],
                g["momentum"],
                g["eta"],
                float(g.get("rmsprop_blend", 0.0)),
                rate,
                self.rmsprop_beta,
                self.rmsprop_eps,
            )
            cached = self._hp_cache[k]
            if cached is None or cached[1] != vals:
                _check_hparam("weight_decay", vals[0], where=where)
                _check_hparam("momentum", vals[1], where=where)  # > 1 for a step with a momentum correction
                _check_hparam("eta", vals[2], where=where)
                _check_hparam("rmsprop_blend", vals[3], 0.0, 1.0 + 1e-12, where=where)
                if rate is not None:
                    _check_hparam("rmsprop_lr", rate, where=where)
                for j, v in enumerate(vals[:3]):
                    hp[base + 1 + j].fill_(float(v))
                hp[base + 4].fill_(vals[3])
                hp[base + 6].fill_(vals[5])
                hp[base + 7].fill_(vals[6])
                if rate is not None:
                    hp[base + 5].fill_(float(rate))
            rate_is_lr = rate is None
            if isinstance(lr, torch.Tensor) and lr.device.type == "cpu" and hp.device.type != "cpu":
                # a host scalar: read it here (a CPU read, no device sync) and fill, as for a
                # float; a copy_ from pageable host memory would block the host every step
                hp[base].fill_(float(lr))
                if rate_is_lr:
                    hp[base + 5].fill_(float(lr))
            elif isinstance(lr, torch.Tensor):
                hp[base].copy_(lr.reshape(()))  # same device: no sync
                if rate_is_lr:
                    hp[base + 5].copy_(lr.reshape(()))
            elif cached is None or cached[0] != lr or cached[1] != vals:
                _check_hparam("lr", lr, where=where)
                hp[base].fill_(float(lr))
                if rate_is_lr:
                    hp[base + 5].fill_(float(lr))
            self._hp_cache[k] = (None if isinstance(lr, torch.Tensor) else lr, vals)

    @torch.no_grad()
    def step(self, closure=None, found_inf: torch.Tensor | None = None):
        """One step for all parameters; `found_inf` (device scalar) != 0 skips it entirely."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        L = self.layout
        L.check_views()
        L.attach_grads()
        self._refresh_hparams()
        grads = L.grads
        blends = {float(g.get("rmsprop_blend", 0.0)) for g in self.param_groups}
        if len(blends) != 1:
            raise ValueError(f"rmsprop_blend: must be the same in every param group, got {sorted(blends)}")
        mode = self.mode
        sq_avg = None
        if blends.pop() != 0.0:
            mode |= ops.STEP_RMSPROP
            if self.rmsprop_sq_avg is None:
                self.rmsprop_sq_avg = torch.zeros_like(grads)
            sq_avg = self.rmsprop_sq_avg
        args = (L.params, grads, self.momentum_buffer)
        kw = dict(mode=mode, eps=self.eps, found_inf=found_inf, sq_avg=sq_avg)
        if self._native and self.mode & ops.STEP_LARS:
            version = self._param_version()
            cur, nxt = self._partials
            if version == self._wsq_version:
                kw["mode"] |= ops.STEP_W_NORM_CACHED
            ops.fused_step(
                *args,
                L.chunks,
                self._seg_group,
                self._seg_flags,
                self._hparams,
                **kw,
                partials=cur,
                wsq_out=nxt[: L.chunks.num_chunks],
                path=self._path,
            )
            self._partials = [nxt, cur]
            self._wsq_version = version
        else:
            ops.fused_step(*args, L.chunks, self._seg_group, self._seg_flags, self._hparams, **kw, path=self._path)
        return loss

    def state_dict(self):
        sd = super().state_dict()
        if self.rmsprop_sq_avg is not None:
            sd["rmsprop_sq_avg"] = self.rmsprop_sq_avg
        return sd

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the flat gradient buffer in place. `set_to_none` is ignored: .grad must stay
        views of the flat buffer (the all-reduce buckets slice it)."""
        self.layout.zero_grad()

    # ------------------------------------------------------------------ checkpoints

    def load_state_dict(self, state_dict) -> None:
        """Load, then copy each momentum into the flat buffer (state tensors stay its views)."""
        state_dict = dict(state_dict)
        sq = state_dict.pop("rmsprop_sq_avg", None)
        super().load_state_dict(state_dict)
        self.rmsprop_sq_avg = None if sq is None else sq.to(self.layout.grads).clone()
        with torch.no_grad():
            for segs, g in zip(self._seg_of, self.param_groups):
                for s, p in zip(segs, g["params"]):
                    buf = self.state[p].get("momentum_buffer")
                    view = self._mom_views[s]
                    if buf is None:
                        view.zero_()
                    elif buf is not view:
                        view.copy_(buf)
        self._point_state_at_views()
        self._build_segments()  # groups may carry other adapt/decay overrides; drops the norm cache


class FusedLARS(_FusedMomentum):
    """LARS (You et al. 2017) as one fused step; MLPerf convention by default (module doc).

    FusedLARS(params, lr, momentum=0.9, weight_decay=0.0, eta=0.001, eps=0.0, *,
              nesterov=False, lr_inside_momentum=True, layout=None, backend="auto",
              rmsprop_beta=0.99, rmsprop_eps=1e-8, rmsprop_lr=None)

    params: parameters, param groups (dicts; besides lr, momentum, weight_decay, eta they
    may set `adapt` and `decay` to True/False to override the ndim <= 1 default) or a
    model's parameters. `layout`: the model's fastres.kernels.flat.FlatParams when it has one (the
    trainer builds one per model and hands it to the reducer and here); without it the
    parameters are moved into a new layout. backend: passed to fastres.kernels.ops.fused_step as its
    path: "auto" (fastres._C's kernel where it runs, else the run-time compiled one, else
    torch), "native" (fastres._C), "rtc" (CuPy/NVRTC) or "torch" (fastres.kernels.torch_ops).
    """

    _lars = True


class FusedSGD(_FusedMomentum):
    """Momentum SGD as one fused step (FusedLARS with trust = 1). Default convention torch's
    (lr_inside_momentum=False): a drop-in for torch.optim.SGD(momentum=mu, weight_decay=wd)
    with decay on every tensor unless a group sets `decay`/its weight_decay to 0.

    FusedSGD(params, lr, momentum=0.9, weight_decay=0.0, *, nesterov=False, lr_inside_momentum=False,
             layout=None, backend="auto", rmsprop_beta=0.99, rmsprop_eps=1e-8, rmsprop_lr=None)

    The arguments are FusedLARS's; eta and eps, which only the trust ratio uses, are ignored."""

    _lars = False
    _lr_inside_momentum = False

    def _default_decay(self) -> torch.Tensor:
        # SGD: weight decay wherever a group asks for it (torch's semantics), unless overridden
        return torch.ones_like(self.layout.decay)
