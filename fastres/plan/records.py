"""Published ResNet-50 runs, each with the file, table or section its figures were read from.

Two roles, kept apart:

  CALIBRATION  one-device tables and one-node (or, for a tensor-core GPU's t0, one node beside
               eight nodes of the same round and software) results: the only runs whose figures
               set a constant (fastres.plan.calibrate.RECIPES say which run feeds which speed).
  VALIDATION   every other run: predicted with those constants and compared, never fitted.
               `python -m fastres.plan --validate` prints them; tests/test_plan.py fails when
               one leaves its band (BAND, or a run's own stated band with its explanation).

MLPerf figures are read from NVIDIA's (and Google's, Intel's, Fujitsu's, Azure's) logs in the
MLCommons results repositories (github.com/mlcommons/training_results_v0.5 .. v4.0):
`result_0.txt` .. `result_4.txt` of the system's `resnet` folder. "published" is MLPerf's score:
the mean of run_stop - run_start over the five logs with the fastest and the slowest dropped;
epochs and evaluations are those of the three runs kept; the steady step of a calibration run
is the median gap between epoch_start marks divided by the steps of an epoch. Batch sizes,
node counts and networks come from the logs' global_batch_size and the `systems/*.json` and
`config_*.sh` files named. Paper figures come from the paper's abstract where that says so;
whatever could not be read here says "not confirmed".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fastres import IMAGENET_TRAIN_IMAGES

__all__ = ["BAND", "CALIBRATION", "RUNS", "VALIDATION", "Run", "run_by_key"]

BAND = 0.20  # predicted / published within 1 +- BAND


@dataclass(frozen=True)
class Run:
    key: str
    name: str
    source: str  # the file / table / section the figures were read from
    device: str  # fastres.plan.devices key
    devices: int
    per_node: int
    global_batch: int
    published_s: float  # what is compared: seconds end to end (or per step, for a step figure)
    published: str  # as the source states it
    epochs: float = 90
    evals: float = 0
    role: str = "validation"  # or "calibration"
    kind: str = "time"  # "time": end to end; "step": one steady step; "throughput": images/s (published_s = 1/rate)
    precision: str = "mixed"
    inter_gbps: float = 0.0  # one node's network links together, one direction (0: one node)
    network: str = ""  # as published
    allreduce: str = "flat"
    wire_dtype: str = "fp16"
    overlap: bool = False
    bucket_mb: float = 25.0
    backend: str = "nccl"
    speed: str = ""  # fastres.plan.calibrate recipe; "" = the device's default
    band: float = BAND
    explained: str = ""  # why a run sits outside BAND (then `band` is its own, wider one)
    unconfirmed: str = ""  # inputs that could not be read from the source
    epochs_law: str = ""  # the fastres.plan.epochs family whose law predicts its epochs ("": none)

    @property
    def nodes(self) -> int:
        return self.devices // self.per_node

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(IMAGENET_TRAIN_IMAGES / self.global_batch)


def _repo(rnd: str) -> str:
    return f"mlcommons/training_results_{rnd}"


def _mlperf(key, rnd, folder, device, nodes, per_node, batch, score_s, epochs, evals, inter_gbps, network, **kw):
    """An MLPerf closed-division result: five logs, MLPerf's olympic mean."""
    parts = folder.split("/")
    org = parts[1] if parts[0] == "v0.5.0" else parts[0]
    kw.setdefault("epochs_law", {"v0.5": "", "v0.6": "lars-v0.6"}.get(rnd, "lars"))  # v0.5's target was 74.9%
    system = parts[2] if parts[0] == "v0.5.0" and parts[-1] == "tpu" else parts[-1]
    return Run(
        key=key,
        name=kw.pop("name", f"MLPerf {rnd} {org} {system}"),
        source=f"{_repo(rnd)} {folder}/resnet/result_0..4.txt (run_start..run_stop, epochs, evals)",
        device=device,
        devices=nodes * per_node,
        per_node=per_node,
        global_batch=batch,
        published_s=score_s,
        published=(f"{score_s / 3600:.1f} h" if score_s >= 7200 else f"{score_s:.4g} s") + " (olympic mean of 5 logs)",
        epochs=epochs,
        evals=evals,
        inter_gbps=inter_gbps,
        network=network,
        **kw,
    )


def _step(key, rnd, folder, device, nodes, per_node, batch, epoch_s, network="", inter_gbps=0.0, **kw):
    """A calibration figure: the steady epoch of an MLPerf log, as one step."""
    steps = math.ceil(IMAGENET_TRAIN_IMAGES / batch)
    return Run(
        key=key,
        name=f"MLPerf {rnd} {folder.split('/')[0]} {folder.rsplit('/', 1)[-1]} (steady step)",
        source=f"{_repo(rnd)} {folder}/resnet/result_1.txt: median epoch_start gap {epoch_s} s / {steps} steps",
        device=device,
        devices=nodes * per_node,
        per_node=per_node,
        global_batch=batch,
        published_s=epoch_s / steps,
        published=f"{epoch_s / steps * 1e3:.2f} ms/step",
        role="calibration",
        kind="step",
        inter_gbps=inter_gbps,
        network=network,
        **kw,
    )


# Networks as the systems' json files state them (compute NICs only; one direction per node).
DGX1 = "4 x InfiniBand EDR 100 Gb/s (v0.6 NVIDIA/systems/dgx1_n130_ngc19.05_mxnet.json: ConnectX-4, 4 cards)"
DGX2H = "8 x InfiniBand EDR 100 Gb/s (v0.7 NVIDIA/systems/dgx2h_n96_ngc20.06_mxnet.json, compute)"
DGXA100 = "8 x InfiniBand HDR 200 Gb/s (v1.1 NVIDIA/systems/dgxa100_n540_ngc21.09_mxnet.json, compute)"
DGXH100 = "8 x InfiniBand NDR 400 Gb/s (v3.0 NVIDIA/systems/dgxh100_n96_ngc23.04_mxnet.json, compute)"
ABCI = "2 x InfiniBand EDR 100 Gb/s per 4-V100 node (ABCI; v0.6 Fujitsu/systems json not re-read: not confirmed)"
MXNET_ONE_GROUP = "MXNet + Horovod, MXNET_HOROVOD_NUM_GROUPS=1 (config_*.sh): one fused all-reduce after backward"
MXNET_V06 = "MXNet + Horovod, MXNET_HOROVOD_NUM_GROUPS=16 (v0.6 config_DGX*_multi.sh): 16 groups overlapped"

CALIBRATION: list[Run] = [
    Run(
        key="tf-p100-b64",
        name="TensorFlow benchmarks, 1 x P100, batch 64",
        source="tensorflow/docs site/en/r1/guide/performance/benchmarks.md (@62da04c), DGX-1 P100, "
        "Training synthetic data, 1 GPU, ResNet-50: 219 img/s",
        device="p100",
        devices=1,
        per_node=1,
        global_batch=64,
        published_s=64 / 219,
        published="219 img/s (292.2 ms/step)",
        role="calibration",
        kind="step",
        precision="fp32",
    ),
    Run(
        key="tf-p100-b32",
        name="TensorFlow benchmarks, 1 x P100, batch 32",
        source="same page, Other Results (batch size 32), Training synthetic data, 1 GPU, ResNet-50: 195 img/s",
        device="p100",
        devices=1,
        per_node=1,
        global_batch=32,
        published_s=32 / 195,
        published="195 img/s (164.1 ms/step)",
        role="calibration",
        kind="step",
        precision="fp32",
    ),
    Run(
        key="goyal-8gpu",
        name="Goyal et al. 2017, one server (8 P100, k=256)",
        source="Goyal et al. 2017 (arXiv:1706.02677): the 8-GPU baseline trains in 29 hours, as quoted by "
        "NVIDIA's blog 'Facebook trains ImageNet in 1 hour' and Jia et al. 2018 sec. 1 (paper's table not re-read)",
        device="p100",
        devices=8,
        per_node=8,
        global_batch=256,
        published_s=29 * 3600,
        published="29 h",
        role="calibration",
        speed="p100-caffe2",
        precision="fp32",
        wire_dtype="fp32",
        allreduce="flat",
        overlap=True,
        unconfirmed="29 h read from citing sources, not the paper",
    ),
    Run(
        key="dle-a100-tf32",
        name="NVIDIA DeepLearningExamples MXNet RN50, 1 x A100 80 GB, TF32",
        source="NVIDIA/DeepLearningExamples MxNet/Classification/RN50v1.5/README.md (@729963d), Training "
        "performance: DGX A100, 1 GPU, Throughput - TF32: 1055.78 img/s (benchmark.py -b 512 --dtype float32)",
        device="a100",
        devices=1,
        per_node=1,
        global_batch=512,
        published_s=512 / 1055.78,
        published="1,056 img/s (485.0 ms/step)",
        role="calibration",
        kind="step",
        precision="fp32",
    ),
    Run(
        key="dle-v100-fp32",
        name="NVIDIA DeepLearningExamples MXNet RN50, 1 x V100 16 GB, FP32",
        source="same README, Training performance: DGX-1 (8x V100 16GB), 1 GPU, Throughput - FP32: 384 img/s "
        "(benchmark.py -b 96 --dtype float32)",
        device="v100",
        devices=1,
        per_node=1,
        global_batch=96,
        published_s=96 / 384,
        published="384 img/s (250.0 ms/step)",
        role="calibration",
        kind="step",
        precision="fp32",
    ),
    _step("mlperf-v0.7-dgx1", "v0.7", "NVIDIA/results/dgx1_ngc20.06_mxnet", "v100", 1, 8, 1664, 114.7415),
    _step("mlperf-v0.7-dgx2h", "v0.7", "NVIDIA/results/dgx2h_ngc20.06_mxnet", "v100-sxm3", 1, 16, 3328, 50.7595),
    _step(
        "mlperf-v0.7-dgx2h-n32",
        "v0.7",
        "NVIDIA/results/dgx2h_n32_ngc20.06_mxnet",
        "v100-sxm3",
        32,
        16,
        33280,
        2.063,
        network=DGX2H,
        inter_gbps=800,
    ),
    _step("mlperf-v2.0-dgxa100", "v2.0", "NVIDIA/results/dgxa100_ngc22.04_mxnet", "a100", 1, 8, 3264, 47.126),
    _step(
        "mlperf-v2.0-dgxa100-n8",
        "v2.0",
        "NVIDIA/results/dgxa100_n8_ngc22.04_mxnet",
        "a100",
        8,
        8,
        3264,
        7.647,
        network=DGXA100,
        inter_gbps=1600,
    ),  # fmt: skip
    _step("mlperf-v4.0-eos", "v4.0", "NVIDIA/results/eos_ngc24.04_mxnet", "h100", 1, 8, 3200, 22.3845),
    _step(
        "mlperf-v4.0-eos-n8",
        "v4.0",
        "NVIDIA/results/eos_n8_ngc24.04_mxnet",
        "h100",
        8,
        8,
        3200,
        4.0815,
        network=DGXH100,
        inter_gbps=3200,
    ),  # fmt: skip
    _step("mlperf-v4.0-h200", "v4.0", "NVIDIA/results/h200_ngc24.04_mxnet", "h200", 1, 8, 3200, 20.151),
    Run(
        key="mlperf-v0.5-tpu-v3-8",
        name="MLPerf v0.5 Google TPU v3-8 (one host, 4 chips, steady step)",
        source=f"{_repo('v0.5')} v0.5.0/google/cloud_v3.8/resnet-tpuv3-8/results/tpu/resnet/result_0..4.txt: "
        "olympic mean 11,004 s over 62 epochs less 245 s of evaluation, 1,252 steps of 1,024",
        device="tpu-v3",
        devices=4,
        per_node=4,
        global_batch=1024,
        published_s=(11004.2 - 244.8) / 62 / 1252,
        published=f"{(11004.2 - 244.8) / 62 / 1252 * 1e3:.1f} ms/step",
        role="calibration",
        kind="step",
        wire_dtype="fp32",
        allreduce="2d-torus",
    ),
    Run(
        key="mlperf-v0.5-intel-2s",
        name="MLPerf v0.5 Intel, one node of 2 x Xeon Platinum 8180 (steady step)",
        source=f"{_repo('v0.5')} v0.5.0/intel/intel_resnet_submission/results/skx_8180_2s_1x/resnet/result_0..4.txt: "
        "olympic mean 624,127 s over 63.7 epochs less 5,457 s of evaluation; 10,009 steps of 128 "
        "(code/resnet/run_and_time_skx_8180_2s_1x.sh: ppn=4, batch_size 32 each)",
        device="xeon-8180",
        devices=2,
        per_node=2,
        global_batch=128,
        published_s=(624126.7 - 5457.3) / 63.667 / 10009,
        published=f"{(624126.7 - 5457.3) / 63.667 / 10009:.3f} s/step",
        role="calibration",
        kind="step",
        precision="fp32",
        wire_dtype="fp32",
        backend="mpi",
        overlap=True,
    ),
]

VALIDATION: list[Run] = (
    [
        # ------------------------------------------------------------------ the papers (the seed's runs first)
        Run(
            key="goyal-2017",
            name="Goyal et al. 2017 (Facebook), 256 x P100",
            source="arXiv:1706.02677 abstract (ResNet-50, minibatch 8192, 256 GPUs, one hour); sec. 4 (Big Basin: "
            "8 P100 SXM2 NVLink per server, 50 Gbit Ethernet; reduce in the server, recursive halving/doubling "
            "across, during backprop)",
            device="p100",
            devices=256,
            per_node=8,
            global_batch=8192,
            published_s=3600,
            published="about 1 h",
            precision="fp32",
            inter_gbps=50,
            network="50 Gbit Ethernet per server",
            allreduce="hierarchical",
            wire_dtype="fp32",
            overlap=True,
            speed="p100-caffe2",
            unconfirmed="sec. 4 details from the paper as cited in this repository's earlier planner, not re-read",
            epochs_law="goyal",
        ),
        Run(
            key="you-2017-skylake",
            name="You et al. 2017 (Berkeley/TACC), 1,600 Xeon 8160",
            source="arXiv:1709.05011 v5 abstract (90-epoch ResNet-50 in 32 minutes on 1600 CPUs; Intel's 'Intel "
            "Processors for Deep Learning Training' says 31 min on Xeon Scalable, Skylake-SP); the v10 abstract "
            "names Xeon Platinum 8160",
            device="xeon-8160",
            devices=1600,
            per_node=2,
            global_batch=32000,
            published_s=32 * 60,
            published="32 min (31 per Intel)",
            precision="fp32",
            inter_gbps=100,
            network="Intel Omni-Path 100 Gb/s (Stampede2; not confirmed)",
            wire_dtype="fp32",
            backend="mpi",
            overlap=True,
            band=0.30,
            explained="CPU small-batch penalty: 37.5 img/s per socket implied at 20 per socket vs 53.7 modelled",
            unconfirmed="batch 32,000, 20 per socket (the paper's headline 32K does not split evenly over 1,600 "
            "sockets) and two sockets per node: not confirmed for this run",
        ),
        Run(
            key="you-2017-knl",
            name="You et al. 2017 (Berkeley/TACC), 2,048 Xeon Phi 7250",
            source="arXiv:1709.05011 v10 abstract (90-epoch ResNet-50 in 20 minutes on 2,048 Xeon Phi 7250; "
            "batch 32K per the v5 abstract)",
            device="xeon-phi-7250",
            devices=2048,
            per_node=1,
            global_batch=32768,
            published_s=20 * 60,
            published="20 min",
            precision="fp32",
            inter_gbps=100,
            network="Intel Omni-Path 100 Gb/s (Stampede2; not confirmed)",
            wire_dtype="fp32",
            backend="mpi",
            overlap=True,
            unconfirmed="network not confirmed",
            band=0.65,
            explained="CPU small-batch penalty: 46.9 img/s per KNL implied at 16 per KNL vs 121 modelled",
        ),
        Run(
            key="akiba-2017",
            name="Akiba et al. 2017 (PFN), 1,024 x P100 PCIe",
            source="arXiv:1711.04325 abstract (90 epochs, 32k batch, 1,024 Tesla P100, 15 min); MN-1: 128 nodes "
            "x 8 P100 PCIe, two InfiniBand FDR ports per node (an earlier reading here of the paper and PFN's MN-1 "
            "page; not re-read here); ChainerMN: NCCL ring, fp16 gradients, after backward",
            device="p100-pcie",
            devices=1024,
            per_node=8,
            global_batch=32768,
            published_s=15 * 60,
            published="15 min",
            precision="fp32",
            inter_gbps=2 * 56,
            network="2 x InfiniBand FDR 56 Gb/s per node",
            allreduce="ring",
            wire_dtype="fp16",
            unconfirmed="FDR port count, fp16 wire, no overlap: from the paper as cited, not re-read",
        ),
        Run(
            key="jia-2018",
            name="Jia et al. 2018 (Tencent), 2,048 x P40",
            source="arXiv:1807.11205 abstract (75.8% top-1 in 6.6 minutes using 2,048 Tesla P40; mini-batch up "
            "to 64k; hierarchical all-reduce; compared with 90-epoch runs)",
            device="p40",
            devices=2048,
            per_node=8,
            global_batch=65536,
            published_s=6.6 * 60,
            published="6.6 min",
            precision="fp32",
            inter_gbps=100,
            network="InfiniBand 100 Gb/s per node (not confirmed)",
            allreduce="hierarchical",
            wire_dtype="fp16",
            overlap=True,
            unconfirmed="90 epochs, 8 GPUs and 100 Gb/s per node, overlap: not confirmed",
        ),
        Run(
            key="mikami-2018",
            name="Mikami et al. 2018 (Sony), 2,176 x V100",
            source="arXiv:1811.05233 v1 abstract (224 seconds on ABCI) and title; 2,176 V100, batch 34K growing "
            "to 68K, 2D-torus all-reduce (sec. 3-4 as cited in this repository's earlier planner; not re-read)",
            device="v100",
            devices=2176,
            per_node=4,
            global_batch=69632,
            published_s=224,
            published="224 s",
            inter_gbps=200,
            network=ABCI,
            allreduce="2d-torus",
            wire_dtype="fp16",
            overlap=True,
            band=0.35,
            explained="batch schedule not confirmed: at 68K throughout the prediction is a lower bound",
            unconfirmed="modelled at 68K for all 90 epochs (the share at 34K is not confirmed): a lower bound",
        ),
        Run(
            key="yamazaki-2019",
            name="Yamazaki et al. 2019 (Fujitsu), 2,048 x V100",
            source="arXiv:1903.12650 abstract (74.7 s on 2,048 GPUs of ABCI; training throughput over 1.73 million "
            "images/s): compared as throughput",
            device="v100",
            devices=2048,
            per_node=4,
            global_batch=81920,
            published_s=1 / 1.73e6,
            published="1.73M img/s",
            kind="throughput",
            inter_gbps=200,
            network=ABCI,
            wire_dtype="fp16",
            unconfirmed="batch 81,920 not confirmed (Fujitsu's MLPerf v0.6 run on ABCI used 86,016)",
        ),
        Run(
            key="ying-2018",
            name="Ying et al. 2018 (Google), 1,024 TPU v3 chips",
            source="arXiv:1811.06992 abstract (1024-chip TPU v3 Pod, 2.2 minutes, over 1.05 million images/s): "
            "compared as throughput",
            device="tpu-v3",
            devices=1024,
            per_node=1,
            global_batch=32768,
            published_s=1 / 1.05e6,
            published="1.05M img/s",
            kind="throughput",
            network="2-D torus ICI (4 links per chip, fastres.plan.devices)",
            allreduce="2d-torus",
            wire_dtype="fp32",
            unconfirmed="batch 32,768 (as Google's MLPerf v0.6 1,024-chip run) not confirmed for the paper",
        ),
        # ------------------------------------------------------------------ MLPerf NVIDIA, DGX-1 / DGX-2H (V100)
        _mlperf(
            "mlperf-v0.6-dgx1",
            "v0.6",
            "NVIDIA/results/dgx1_ngc19.05_mxnet",
            "v100",
            1,
            8,
            1664,
            6913.24,
            60,
            15,
            0,
            "",
            overlap=True,
            bucket_mb=102.2 / 20,
        ),
        _mlperf(
            "mlperf-v0.6-dgx1-n130",
            "v0.6",
            "NVIDIA/results/dgx1_n130_ngc19.05_mxnet",
            "v100",
            130,
            8,
            54080,
            101.45,
            86,
            22,
            400,
            DGX1,
            overlap=True,
            bucket_mb=102.2 / 16,
        ),
        _mlperf(
            "mlperf-v0.6-dgx2h",
            "v0.6",
            "NVIDIA/results/dgx2h_ngc19.05_mxnet",
            "v100-sxm3",
            1,
            16,
            3328,
            3164.2,
            60,
            15,
            0,
            "",
            overlap=True,
            bucket_mb=102.2 / 20,
        ),
        _mlperf(
            "mlperf-v0.6-dgx2h-n32",
            "v0.6",
            "NVIDIA/results/dgx2h_n32_ngc19.05_mxnet",
            "v100-sxm3",
            32,
            16,
            33280,
            155.38,
            72,
            18,
            800,
            DGX2H,
            overlap=True,
            bucket_mb=102.2 / 16,
        ),
        _mlperf(
            "mlperf-v0.6-dgx2h-n96",
            "v0.6",
            "NVIDIA/results/dgx2h_n96_ngc19.05_mxnet",
            "v100-sxm3",
            96,
            16,
            59904,
            79.94,
            90,
            23,
            800,
            DGX2H,
            overlap=True,
            bucket_mb=102.2 / 16,
        ),
        _mlperf(
            "mlperf-v0.6-fujitsu-abci",
            "v0.6",
            "Fujitsu/results/abci_2048xV100_mxnet",
            "v100",
            512,
            4,
            86016,
            70.42,
            90,
            23,
            200,
            ABCI,
            overlap=True,
        ),
        # ------------------------------------------------------------------ MLPerf A100
        _mlperf(
            "mlperf-v0.7-dgxa100",
            "v0.7",
            "NVIDIA/results/dgxa100_ngc20.06_mxnet",
            "a100",
            1,
            8,
            3264,
            2386.78,
            41,
            11,
            0,
            "",
            epochs_law="sgd",  # opt_name sgd in its logs
        ),
        _mlperf(
            "mlperf-v0.7-dgxa100-n2",
            "v0.7",
            "NVIDIA/results/dgxa100_n2_ngc20.06_mxnet",
            "a100",
            2,
            8,
            3264,
            1425.2,
            41,
            11,
            1600,
            DGXA100,
            band=0.40,
            explained="v0.7 software: 87.8 ms per step measured at 204 per GPU vs 62.6 modelled",
            epochs_law="sgd",  # opt_name sgd in its logs
        ),
        _mlperf(
            "mlperf-v0.7-dgxa100-n96",
            "v0.7",
            "NVIDIA/results/dgxa100_n96_ngc20.06_mxnet",
            "a100",
            96,
            8,
            34560,
            63.52,
            59,
            15,
            1600,
            DGXA100,
            band=0.40,
            explained="v0.7 software: 27.2 ms per step measured at 45 per GPU vs 18.2 modelled",
        ),
        _mlperf(
            "mlperf-v1.0-dgxa100",
            "v1.0",
            "NVIDIA/results/dgxa100_ngc21.05_mxnet",
            "a100",
            1,
            8,
            3264,
            1726.25,
            35,
            9,
            0,
            "",
        ),
        _mlperf(
            "mlperf-v1.0-dgxa100-n8",
            "v1.0",
            "NVIDIA/results/dgxa100_n8_ngc21.05_mxnet",
            "a100",
            8,
            8,
            13056,
            294.56,
            45,
            12,
            1600,
            DGXA100,
        ),
        _mlperf(
            "mlperf-v1.1-dgxa100",
            "v1.1",
            "NVIDIA/results/dgxa100_ngc21.09_mxnet",
            "a100",
            1,
            8,
            3264,
            1748.8,
            35,
            9,
            0,
            "",
        ),
        _mlperf(
            "mlperf-v1.1-dgxa100-n8",
            "v1.1",
            "NVIDIA/results/dgxa100_n8_ngc21.09_mxnet",
            "a100",
            8,
            8,
            3264,
            272.02,
            35,
            9,
            1600,
            DGXA100,
        ),
        _mlperf(
            "mlperf-v1.1-dgxa100-n128",
            "v1.1",
            "NVIDIA/results/dgxa100_n128_ngc21.09_mxnet",
            "a100",
            128,
            8,
            35840,
            34.48,
            60,
            15,
            1600,
            DGXA100,
        ),
        _mlperf(
            "mlperf-v1.1-dgxa100-n540",
            "v1.1",
            "NVIDIA/results/dgxa100_n540_ngc21.09_mxnet",
            "a100",
            540,
            8,
            64800,
            20.82,
            85,
            22,
            1600,
            DGXA100,
        ),
        _mlperf(
            "mlperf-v1.1-azure",
            "v1.1",
            "Azure/results/nd96amsr_a100_v4_ngc21.09_mxnet",
            "a100",
            1,
            8,
            3264,
            1783.2,
            35,
            9,
            0,
            "",
        ),
        _mlperf(
            "mlperf-v1.1-azure-n8",
            "v1.1",
            "Azure/results/nd96amsr_a100_v4_n8_ngc21.09_mxnet",
            "a100",
            8,
            8,
            3264,
            275.21,
            35,
            9,
            1600,
            "8 x InfiniBand HDR 200 Gb/s (v1.1 Azure/systems/nd96amsr_a100_v4_n8_ngc21.09_mxnet.json)",
        ),
        _mlperf(
            "mlperf-v2.0-dgxa100-n128",
            "v2.0",
            "NVIDIA/results/dgxa100_n128_ngc22.04_mxnet",
            "a100",
            128,
            8,
            35840,
            33.3,
            58.67,
            14.67,
            1600,
            DGXA100,
        ),
        _mlperf(
            "mlperf-v2.0-dgxa100-n527",
            "v2.0",
            "NVIDIA/results/dgxa100_n527_ngc22.04_mxnet",
            "a100",
            527,
            8,
            67456,
            19.17,
            86,
            22,
            1600,
            DGXA100,
        ),
        # ------------------------------------------------------------------ MLPerf H100
        _mlperf(
            "mlperf-v2.1-dgxh100", "v2.1", "NVIDIA/results/dgxh100_preview", "h100", 1, 8, 3200, 881.03, 35, 9, 0, ""
        ),
        _mlperf(
            "mlperf-v2.1-dgxh100-n4",
            "v2.1",
            "NVIDIA/results/dgxh100_n4_preview",
            "h100",
            4,
            8,
            3200,
            269.33,
            35,
            9,
            3200,
            DGXH100,
        ),
        _mlperf(
            "mlperf-v3.0-dgxh100",
            "v3.0",
            "NVIDIA/results/dgxh100_ngc23.04_mxnet",
            "h100",
            1,
            8,
            3200,
            816.05,
            35,
            9,
            0,
            "",
        ),
        _mlperf(
            "mlperf-v3.0-dgxh100-n8",
            "v3.0",
            "NVIDIA/results/dgxh100_n8_ngc23.04_mxnet",
            "h100",
            8,
            8,
            3200,
            159.83,
            35,
            9,
            3200,
            DGXH100,
        ),
        _mlperf(
            "mlperf-v3.0-dgxh100-n64",
            "v3.0",
            "NVIDIA/results/dgxh100_n64_ngc23.04_mxnet",
            "h100",
            64,
            8,
            20480,
            30.19,
            50.67,
            13,
            3200,
            DGXH100,
        ),
        _mlperf(
            "mlperf-v3.0-dgxh100-n96",
            "v3.0",
            "NVIDIA/results/dgxh100_n96_ngc23.04_mxnet",
            "h100",
            96,
            8,
            32256,
            22.16,
            56,
            14,
            3200,
            DGXH100,
        ),
        _mlperf(
            "mlperf-v3.1-eos", "v3.1", "NVIDIA/results/eos_ngc23.09_mxnet", "h100", 1, 8, 3200, 811.32, 35, 9, 0, ""
        ),
        _mlperf(
            "mlperf-v3.1-eos-n8",
            "v3.1",
            "NVIDIA/results/eos_n8_ngc23.09_mxnet",
            "h100",
            8,
            8,
            3200,
            149.65,
            35,
            9,
            3200,
            DGXH100,
        ),
        _mlperf(
            "mlperf-v3.1-coreweave-n448",
            "v3.1",
            "NVIDIA/results/coreweave_hgxh100_n448_ngc23.04_mxnet",
            "h100",
            448,
            8,
            57344,
            10.98,
            77,
            20,
            3200,
            "8 x InfiniBand NDR 400 Gb/s (v3.1 NVIDIA/systems/coreweave_hgxh100_n448_ngc23.04_mxnet.json); SHARP",
        ),
        _mlperf(
            "mlperf-v4.0-eos-n316",
            "v4.0",
            "NVIDIA/results/eos_n316_ngc24.04_mxnet",
            "h100",
            316,
            8,
            40448,
            13.68,
            68.67,
            17.67,
            3200,
            DGXH100,
        ),
        # ------------------------------------------------------------------ MLPerf TPU v3 (Google)
        _mlperf(
            "mlperf-v0.5-tpu-v3-32",
            "v0.5",
            "v0.5.0/google/research_v3.32/resnet-tpuv3-32/results/tpu",
            "tpu-v3",
            16,
            1,
            4096,
            3593.1,
            64,
            16,
            0,
            "2-D torus ICI (4 links per chip, fastres.plan.devices)",
            allreduce="2d-torus",
            wire_dtype="fp32",
            band=0.25,
            explained="v0.5 multi-host software: 175 ms per step at 256 per chip vs 139 on one host",
        ),
        _mlperf(
            "mlperf-v0.5-tpu-v3-512",
            "v0.5",
            "v0.5.0/google/research_v3.512/resnet-tpuv3-512/results/tpu",
            "tpu-v3",
            256,
            1,
            16384,
            424.5,
            74.67,
            18.33,
            0,
            "2-D torus ICI (4 links per chip, fastres.plan.devices)",
            allreduce="2d-torus",
            wire_dtype="fp32",
            band=0.45,
            explained="v0.5 multi-host software: 57 ms per step at 64 per chip vs 45 in v0.6",
        ),
    ]
    + [
        _mlperf(
            f"mlperf-v0.6-tpu-v3-{cores}",
            "v0.6",
            f"Google/results/tpu-v3-{cores}",
            "tpu-v3",
            cores // 2,
            1,
            batch,
            score,
            epochs,
            evals,
            0,
            "2-D torus ICI (4 links per chip, fastres.plan.devices)",
            allreduce="2d-torus",
            wire_dtype="fp32",
        )
        for cores, batch, score, epochs, evals in (
            (32, 4096, 2531.18, 60, 15),
            (128, 16384, 673.36, 64, 16),
            (256, 32768, 411.83, 74.67, 18.67),
            (512, 32768, 231.17, 72, 18),
            (1024, 32768, 136.39, 76, 19),
            (2048, 32768, 76.95, 72, 18),
        )
    ]
    + [
        # ------------------------------------------------------------------ MLPerf Intel CPUs (v0.5)
        _mlperf(
            "mlperf-v0.5-intel-2s-8x",
            "v0.5",
            "v0.5.0/intel/intel_resnet_submission/results/skx_8180_2s_8x",
            "xeon-8180",
            8,
            2,
            1024,
            78768.3,
            61,
            62,
            10,
            "10 Gb Ethernet (results/skx_8180_2s_8x/entry.json)",
            precision="fp32",
            wire_dtype="fp32",
            backend="mpi",
            overlap=True,
        ),
        _mlperf(
            "mlperf-v0.5-intel-4s-4x",
            "v0.5",
            "v0.5.0/intel/intel_resnet_submission/results/skx_8180_4s_4x",
            "xeon-8180",
            4,
            4,
            1024,
            79927.3,
            60.67,
            61.67,
            10,
            "10 Gb Ethernet (results/skx_8180_4s_4x/entry.json)",
            precision="fp32",
            wire_dtype="fp32",
            backend="mpi",
            overlap=True,
        ),
    ]
)

RUNS: list[Run] = CALIBRATION + VALIDATION


def run_by_key(key: str) -> Run:
    for r in RUNS:
        if r.key == key:
            return r
    raise KeyError(key)
