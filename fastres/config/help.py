"""--help: one sentence per config key, with its unit; keys grouped by subject, in this order."""

HELP: dict[str, dict[str, str]] = {
    "data": {
        "data": "dataset root in ImageNet layout (ROOT/train/<class>/*.JPEG, ROOT/val/<class>/*.JPEG) or a folder "
        "of shards from `python -m fastres.data shard`; none: the built-in dataset",
        "backend": "data loader: dali (NVIDIA DALI; GPU decode on a GPU), pytorch (PIL in DataLoader workers), "
        "synthetic (one random batch, for benchmarks), auto (dali where installed, else pytorch)",
        "workers": "loader worker processes (pytorch) or DALI threads, per training process; capped at the CPU count",
        "prefetch": "batches DALI prepares ahead of the training step",
        "hw_decoder_load": "share of JPEGs, 0 to 1, that DALI sends to the GPU's hardware JPEG decoder",
        "data_check": "before training: none, header (open, size and JPEG end marker of every file: fast), or decode "
        "(decode every pixel: slow, finds every bad file)",
        "skip_bad_files": "train without the files the check finds bad, instead of refusing to start",
        "image_size": "side of the square training crop, in pixels",
        "val_image_size": "side of the square validation crop, in pixels; none: --image-size",
        "crop_scale_min": "smallest area of a random-resized crop, as a fraction (0 to 1] of the image",
        "max_bad_samples": "undecodable samples (each replaced by a neutral substitute) in the training set, or in "
        "the validation set, before the run stops; none: 0.1%% of that set",
        "train_list": "train only on the files this list names: `relative/path label` lines, relative to "
        "ROOT/train (the format `python -m fastres.data check --lists` writes, DALI's file_list)",
        "val_list": "validate only on the files this list names (same format, relative to ROOT/val)",
        "train_images": "training images per epoch that --print-schedule assumes (ImageNet: 1281167); none: those "
        "of the dataset the run trains on, counted as training counts them (training itself always does)",
    },
    "model": {
        "arch": "ResNet depth (v1.5: the stride in the 3x3 convolution)",
        "zero_init_last_gamma": "start the last BN gamma of each residual block at 0 (Goyal et al. 2017, sec. 5.1); "
        "--no-zero-init-last-gamma starts it at 1",
        "bn_eval": "BN statistics for validation: running (the moving averages) or batch (no moving averages: "
        "statistics of training batches, averaged over the processes, recomputed before each validation; "
        "Akiba et al. 2017)",
        "bn_group": "processes whose BN statistics are computed together (SyncBN over groups of this many "
        "consecutive ranks; 1: each process alone), for small per-process batches",
        "bn_virtual_batch": "ghost BN: training statistics over groups of this many images inside each process's "
        "batch (Goyal et al. 2017: 32 per worker whatever a process holds; the last group may be smaller); none: "
        "the whole batch",
    },
    "optimisation": {
        "epochs": "passes over the training set",
        "batch_size": "images per process per step; the global batch is this times the number of processes times "
        "--accumulate",
        "global_batch": "images per optimizer step over all processes; sets --batch-size to this / (processes x "
        "--accumulate), an error if that does not divide; none: --batch-size decides",
        "accumulate": "forward/backward passes whose gradients are summed before each optimizer step (a small "
        "machine runs a large global batch)",
        "val_batch_size": "images per process per validation step; none: --batch-size",
        "lr": "peak learning rate, in the unit of --lr-unit: per 256 images (the run uses lr x global batch / 256, "
        "Goyal et al. 2017) or absolute",
        "lr_unit": "unit of --lr and --end-lr: per-256 (scaled linearly with the global batch) or absolute",
        "lr_global_batch": "with --lr-unit absolute: the global batch --lr was set for (a record's preset sets its "
        "own). At another global batch the tensors whose step no trust ratio scales (BN parameters and biases with "
        "--optimizer lars, every tensor without LARS) take --lr x global batch / this, linearly scaled; LARS's "
        "conv/fc weights keep --lr (their step is lr x eta x ||w|| / ||g||); none: --lr for every tensor at any batch",
        "momentum": "momentum coefficient, in [0, 1)",
        "nesterov": "Nesterov momentum",
        "optimizer": "sgd (torch.optim.SGD), fused-sgd (fastres FusedSGD: one fused kernel over the flat layout), "
        "lars (fastres FusedLARS, MLPerf convention), rmsprop-warmup (FusedSGD starting as RMSprop and blending "
        "into momentum SGD, Akiba et al. 2017)",
        "momentum_convention": "where the lr enters the momentum: mlperf (m = mu m + lr g; w -= m), torch "
        "(m = mu m + g; w -= lr m), auto (mlperf for lars and rmsprop-warmup, torch for sgd and fused-sgd); "
        "sgd allows torch only",
        "lars_eta": "LARS trust coefficient eta (You et al. 2017; MLPerf uses 0.001)",
        "lars_eps": "LARS epsilon: trust = eta ||w|| / (||g|| + wd ||w|| + eps)",
        "rmsprop_lr": "RMSprop's own learning rate in the RMSprop warm-up (absolute, not scaled with the batch); "
        "needed with --optimizer rmsprop-warmup",
        "rmsprop_center": "epoch at which the RMSprop warm-up is half RMSprop, half SGD",
        "rmsprop_period": "epochs over which the RMSprop warm-up turns into SGD (pure SGD from centre + period/2)",
        "rmsprop_beta": "RMSprop's decay of the average of squared gradients, in [0, 1)",
        "rmsprop_eps": "added to RMSprop's root mean square",
        "weight_decay": "L2 weight decay on conv and fc weights (BN parameters and biases get none)",
        "bias_decay": "weight decay on the biases too (the fc bias; NVIDIA's MLPerf runs decay every weight and the "
        "fc bias, BN's gamma and beta never)",
        "momentum_correction": "scale the momentum by lr_t / lr_t-1 each step (Goyal et al. 2017 eq. 10, NVIDIA's "
        "MLPerf sgdwfastlars); needs --momentum-convention mlperf (torch's convention needs none)",
        "schedule_origin": "where step 0 sits on the warm-up and decay: fastres (warm-up step k at (k+1)/W, decay "
        "from step W), mxnet (every step at its update number step+1, as NVIDIA's MLPerf runs: the last step at "
        "--end-lr), zero (step 0 at the warm-up's start, Goyal et al. 2017)",
        "steps_rounding": "steps per epoch: floor (an epoch's incomplete batch is dropped) or ceil (NVIDIA's MLPerf "
        "runs: ceil(floor(images / processes) / batch), the last batch filled up to a whole batch; every backend)",
        "label_smoothing": "label smoothing of the cross-entropy loss, in [0, 1)",
        "schedule": "learning-rate decay after warm-up: cosine, poly (power --poly-power), step (x --factors, "
        "default x0.1 each, at --milestones, default 1/3, 2/3, 8/9 of training), piecewise (lr x --factors from "
        "each of --milestones), constant",
        "milestones": "epochs at which step and piecewise schedules change the lr, comma-separated (e.g. 30,60,80); "
        "none: 1/3, 2/3, 8/9 of training (step)",
        "factors": "lr as a fraction of the peak before the first milestone and from each one on, comma-separated, "
        "one more than --milestones; none: 1, 0.1, 0.01, ... (step)",
        "poly_power": "power of the poly decay",
        "end_lr": "lr at the end of a cosine or poly decay, in the unit of --lr-unit; none: 0",
        "warmup_epochs": "epochs of linear warm-up to the peak learning rate (may be fractional)",
        "warmup_start": "first lr of the warm-up as a fraction of the peak (Goyal et al. 2017 at 8K: 0.1 / 3.2 = "
        "0.03125)",
        "target_top1": "stop once validation top-1 reaches this percentage; none: train every epoch",
    },
    "precision and devices": {
        "device": "auto (CUDA where available), cpu or cuda; several processes take one GPU each",
        "precision": "auto (bf16 autocast on CUDA and on a CPU that computes bf16 natively: AVX-512 BF16 or AMX; "
        "fp32 on other CPUs, where bf16 is emulated and slower), fp32, bf16 (autocast, CPU or GPU), or fp16 "
        "(autocast with dynamic loss scaling; a step whose scaled gradients overflow is skipped)",
        "channels_last": "NHWC memory format for the model and batches; none: on CUDA only, not on the CPU",
        "compile": "run the model's forward and backward through torch.compile (inductor); the first steps "
        "compile for a minute or more",
        "threads": "torch intra-op threads per process on the CPU; none: torch's default",
        "seed": "seed of the initialisation, the data order and the augmentations",
    },
    "distributed": {
        "virtual_nodes": "split each machine's processes into this many nodes, to run the hierarchical all-reduce "
        "on one machine; none: $FASTRES_VIRTUAL_NODES or 1",
        "allreduce": "gradient all-reduce: flat (one all_reduce per bucket), hierarchical (reduce-scatter in the "
        "node, all_reduce across nodes, all-gather in the node), auto (hierarchical when there are several nodes "
        "of several processes)",
        "bucket_cap_mb": "MiB of fp32 gradients per all-reduce bucket (the first bucket: 1 MiB)",
        "wire_dtype": "gradients on the wire: fp32, bf16 or fp16 (half the bytes; scaled and cast in one pass)",
        "dist_timeout": "seconds the rendezvous and the run's setup (rank 0 checking the dataset, writing the run "
        "folder) wait for the other processes before the run stops",
        "collective_timeout": "seconds a collective of the running job (a step's gradient all-reduce, a checkpoint's "
        "gather) waits for the other processes before every rank leaves with one line and exit status 75, which an "
        "elastic launcher restarts on: how long a dead host or a cut link goes unnoticed at most",
    },
    "run": {
        "out": "parent folder of run folders",
        "name": "run folder name under --out; none: <arch>-<date>-<time>",
        "log_every": "steps between progress and metrics records (each one synchronises the device)",
        "progress": "progress bar on rank 0 (when stderr is a terminal)",
        "resume": "continue a run: a checkpoint file, a run folder (its newest checkpoint that verifies), or "
        "auto: continue OUT/NAME (--name) if it has a checkpoint, else start it",
        "checkpoint_every": "steps between checkpoints besides the one at each epoch's end; none: epoch ends only",
        "checkpoint_minutes": "minutes between checkpoints besides epoch ends; none: off",
        "keep_checkpoints": "newest checkpoints kept in RUN/checkpoints (older ones are deleted)",
        "progress_seconds": "seconds between progress lines when stderr is not a terminal (batch-system logs)",
        "max_skipped_steps": "steps in a row skipped for NaN/Inf gradients before the run stops",
        "tensorboard": "also write loss, lr, accuracy and img/s for TensorBoard into RUN/tensorboard",
    },
}
