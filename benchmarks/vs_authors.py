"""Speed against the authors' PyTorch code, on one machine, in one run: training step and map inference.

    pip install -e .[bench]       # torch (CPU build is enough); never a dependency of the package
    python benchmarks/vs_authors.py [--size 448] [--batch 16] [--rounds 3] [--steps 4] [--warmup 2]
        [--only train_same infer_same ...]

The authors' step is rebuilt from their paper and CUB recipe (CVI-SZU/CCAM ``WSOL/``; ../shared/BENCHMARK.md):
a torchvision-layout ResNet50 with its last stage at stride 1 and features concat(layer3, layer4) (3072
channels), the 3x3 conv (no bias) + BN + sigmoid head, the disentangler (eq. 1, divided by H*W), their loss
SimMax(bg) + SimMin(bg, fg) + SimMax(fg) with rank weighting (alpha 0.05), and their optimizer: SGD over the
conv weights only (their parameter groups), momentum 1e-4 (their PolyOptimizer passes the weight decay as the
momentum), weight decay 1e-4, poly lr; the model in train mode (BN statistics update). Before any timing the
PyTorch loss is checked against ../shared/golden/A_losses.npz (the authors' code's outputs), so the loss timed
is their computation. Random init on both sides (weights do not change speed).

Ours, for the same setup: ``TrainConfig(backbone="resnet50", backbone_features="concat", freeze_backbone=False,
recipe="reference", weights=None)`` through the trainer's ``build_model`` and ``train_on_batch``; and our
recommended recipe (EfficientNet-Lite0, frozen, head features, its own 224 crop), with and without the folded
BatchNorm twin it trains through (``C2AM.fold_frozen_backbone``). Inference: the map alone
(``model(x, training=False)``, batch ``--batch``, at ``--size``) for both ResNet50 models, the ``cub_lite0``
preset, and its TFLite int8 export (one image per invoke, ``--batch`` invokes).

Each pair runs interleaved in fresh processes (A, B, A, B, ...), ``--warmup`` steps excluded; each process
measures the float32 matmul rate at its start and its end, so load shows. Printed: images/s median [min-max]
over every timed step, the ratio ours / authors', the thread settings, GFLOP per image and the share of the
same process's matmul rate. Data pipelines are left out on both sides (inputs are in memory).
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "..", "..", "shared", "golden", "A_losses.npz")

# trial -> (framework, what it times)
TRIALS = {
    "train_authors": ("torch", "training step, authors' setup (ResNet50 concat, fine-tuned, reference recipe)"),
    "train_same": ("tf", "training step, same setup, ours"),
    "train_recommended": ("tf", "training step, our recommended recipe (Lite0 frozen, head features, 224)"),
    "train_recommended_unfolded": ("tf", "the same, through the backbone itself (BN not folded)"),
    "infer_authors": ("torch", "map inference, authors' ResNet50 model"),
    "infer_same": ("tf", "map inference, our ResNet50 model"),
    "infer_cub_lite0": ("tf", "map inference, cub_lite0 preset"),
    "infer_cub_lite0_int8": ("tflite", "map inference, cub_lite0 TFLite int8"),
}
# (baseline, our trial): interleaved, the ratio printed; a trial without a partner runs alone
PAIRS = [("train_authors", "train_same"), ("train_recommended_unfolded", "train_recommended"),
         ("infer_authors", "infer_same"),
         ("infer_cub_lite0", "infer_cub_lite0_int8")]


# ---------------------------------------------------------------- the authors' model and step, in PyTorch
def torch_modules():
    """(ResNet50 at stride 16 with concat(layer3, layer4) features, the C2AM head + disentangler, the loss)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, cin, width, stride=1, down=None):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
            self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
            self.conv3, self.bn3 = nn.Conv2d(width, width * 4, 1, bias=False), nn.BatchNorm2d(width * 4)
            self.downsample = down

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = F.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return F.relu(out + (self.downsample(x) if self.downsample is not None else x))

    class ResNet50(nn.Module):
        """torchvision's layout (stride on the 3x3 conv), strides (2, 2, 2, 1) as the authors build it."""

        def __init__(self, strides=(2, 2, 2, 1)):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, strides[0], 3, bias=False), nn.BatchNorm2d(64)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.inplanes = 64
            self.layer1 = self._layer(64, 3, 1)
            self.layer2 = self._layer(128, 4, strides[1])
            self.layer3 = self._layer(256, 6, strides[2])
            self.layer4 = self._layer(512, 3, strides[3])

        def _layer(self, width, blocks, stride):
            down = None
            if stride != 1 or self.inplanes != width * 4:
                down = nn.Sequential(nn.Conv2d(self.inplanes, width * 4, 1, stride, bias=False),
                                     nn.BatchNorm2d(width * 4))
            layers = [Bottleneck(self.inplanes, width, stride, down)]
            self.inplanes = width * 4
            layers += [Bottleneck(self.inplanes, width) for _ in range(blocks - 1)]
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
            x3 = self.layer3(self.layer2(self.layer1(x)))
            return torch.cat([x3, self.layer4(x3)], dim=1)

    class Disentangler(nn.Module):
        def __init__(self, cin):
            super().__init__()
            self.activation_head = nn.Conv2d(cin, 1, 3, padding=1, bias=False)
            self.bn_head = nn.BatchNorm2d(1)

        def forward(self, x):
            n, c, h, w = x.shape
            ccam = torch.sigmoid(self.bn_head(self.activation_head(x)))
            ccam_ = ccam.reshape(n, 1, h * w)
            flat = x.reshape(n, c, h * w).permute(0, 2, 1).contiguous()
            fg = torch.matmul(ccam_, flat) / (h * w)
            bg = torch.matmul(1 - ccam_, flat) / (h * w)
            return fg.reshape(n, -1), bg.reshape(n, -1), ccam

    class Network(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.ac_head = ResNet50(), Disentangler(1024 + 2048)

        def forward(self, x):
            return self.ac_head(self.backbone(x))

    def cos_sim(a, b):
        sim = torch.matmul(F.normalize(a, dim=1), F.normalize(b, dim=1).T)
        return torch.clamp(sim, min=0.0005, max=0.9995)

    def sim_max(x, alpha):
        sim = cos_sim(x, x)
        loss = -torch.log(sim)
        _, indices = sim.sort(descending=True, dim=1)
        _, rank = indices.sort(dim=1)
        return torch.mean(loss * torch.exp(-(rank - 1).float() * alpha))

    def sim_min(bg, fg):
        return torch.mean(-torch.log(1 - cos_sim(bg, fg)))

    def loss(fg, bg, alpha=0.05):
        return sim_max(bg, alpha) + sim_min(bg, fg) + sim_max(fg, alpha)

    return Network, loss


def check_torch_loss():
    """Largest relative error of the PyTorch loss against the authors' code's outputs (golden A_losses)."""
    import numpy as np
    import torch

    _, loss = torch_modules()
    golden = np.load(GOLDEN)
    worst, cases = 0.0, sorted({k.split("_")[0] for k in golden.files})
    for case in cases:
        fg, bg = torch.from_numpy(golden[f"{case}_fg"]), torch.from_numpy(golden[f"{case}_bg"])
        for j, alpha in enumerate(golden[f"{case}_alphas"]):
            got, want = float(loss(fg, bg, float(alpha))), float(golden[f"{case}_total"][j])
            worst = max(worst, abs(got - want) / max(abs(want), 1e-12))
    return worst, len(cases)


def conv_gflops_torch(net, size):
    """GFLOP (2 x multiply-adds) of the convolutions and matmuls of one (1, 3, size, size) forward pass."""
    import torch

    total = [0]

    def hook(module, inputs, output):
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total[0] += 2 * k * output.numel()

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        net.train(False)  # inference mode (Module.eval() is this call; no file is read)
        fg, _, ccam = net(torch.zeros(1, 3, size, size))
        total[0] += 2 * 2 * fg.shape[1] * ccam.shape[-1] * ccam.shape[-2]  # the disentangler's two matmuls
    for h in handles:
        h.remove()
    return total[0] / 1e9


def torch_trial(name, size, batch, steps, warmup):
    """Per-step seconds of the authors' training step or map inference in PyTorch."""
    import numpy as np
    import torch
    from machine import call_seconds

    torch.manual_seed(1)
    Network, loss_fn = torch_modules()
    net = Network()
    gflop = conv_gflops_torch(net, size)
    x = torch.from_numpy(np.random.RandomState(0).randn(batch, 3, size, size).astype(np.float32))
    info = {"threads": f"torch intra-op {torch.get_num_threads()}, inter-op {torch.get_num_interop_threads()}",
            "gflop_per_image": gflop * (3 if name.startswith("train") else 1)}
    if name == "infer_authors":
        net.train(False)  # inference mode, as Module.eval()

        def step():
            with torch.no_grad():
                return net(x)[2]
    else:
        net.train()
        convs = [m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d)]  # their parameter groups
        opt = torch.optim.SGD([{"params": convs}], lr=1e-4, momentum=1e-4, weight_decay=1e-4)
        total, done = 1000, [0]

        def step():
            for group in opt.param_groups:  # PolyOptimizer: lr * (1 - step / max_step) ** 0.9
                group["lr"] = 1e-4 * (1 - done[0] / total) ** 0.9
            fg, bg, _ = net(x)
            loss = loss_fn(fg, bg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done[0] += 1
            return float(loss)
    return call_seconds(step, steps, warmup), info


# ---------------------------------------------------------------- ours
def tf_trial(name, size, batch, steps, warmup):
    """Per-step seconds of our training step or map inference (TensorFlow, or the LiteRT interpreter)."""
    import numpy as np
    import tensorflow as tf
    from machine import call_seconds, forward_gflops

    from c2am_tf.models.c2am.model import C2AM
    from c2am_tf.training.trainer import TrainConfig, build_model

    rng = np.random.RandomState(0)
    threads = (f"TF intra-op {tf.config.threading.get_intra_op_parallelism_threads() or 'auto'}, inter-op "
               f"{tf.config.threading.get_inter_op_parallelism_threads() or 'auto'}, oneDNN "
               f"{os.environ.get('TF_ENABLE_ONEDNN_OPTS', '1')}")
    if name in ("train_same", "train_recommended", "train_recommended_unfolded"):
        if name == "train_same":
            cfg = TrainConfig(backbone="resnet50", weights=None, backbone_features="concat", freeze_backbone=False,
                              recipe="reference", lr=1e-4, jit_compile="false")
            crop = size
        else:
            cfg, crop = TrainConfig(jit_compile="false"), TrainConfig().crop
        model = build_model(cfg, 1000)
        if name == "train_recommended_unfolded":
            model._folded.value = None  # what the step cost before fold_frozen_backbone
        x = tf.constant(rng.randint(0, 255, (batch, crop, crop, 3)), tf.uint8)
        gflop = forward_gflops(model.backbone, crop) * (1 if cfg.freeze_backbone else 3)
        return call_seconds(lambda: model.train_on_batch(x), steps, warmup), {
            "threads": threads, "gflop_per_image": gflop, "size": crop}
    if name == "infer_same":
        model = build_model(TrainConfig(backbone="resnet50", weights=None, backbone_features="concat"), 1000)
    else:
        model = C2AM.from_preset("cub_lite0")
    gflop = forward_gflops(model.backbone, size)
    x = rng.randint(0, 255, (batch, size, size, 3)).astype(np.uint8)
    if name == "infer_cub_lite0_int8":
        from ai_edge_litert.interpreter import Interpreter

        from c2am_tf.deploy.tflite_export import convert

        # calibration images set the quantization ranges, not the speed
        blob = convert(model, size, "int8", representative_images=list(x[:4]), calibration_steps=4)
        interpreter = Interpreter(model_content=blob, num_threads=os.cpu_count())
        interpreter.allocate_tensors()
        inp, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]

        def step():
            for image in x:
                interpreter.set_tensor(inp, image[None])
                interpreter.invoke()
                interpreter.get_tensor(out)
        return call_seconds(step, steps, warmup), {"threads": f"LiteRT num_threads {os.cpu_count()}",
                                           "gflop_per_image": gflop}
    predict = tf.function(lambda v: model(v, training=False))
    xt = tf.constant(x)
    return call_seconds(lambda: predict(xt).numpy(), steps, warmup), {"threads": threads, "gflop_per_image": gflop}


def child(args):
    """One trial in this process: its step times, the matmul rate before and after, its settings."""
    sys.path.insert(0, HERE)
    from machine import matmul_gflops

    start = matmul_gflops()
    framework = TRIALS[args.trial][0]
    run = torch_trial if framework == "torch" else tf_trial
    times, info = run(args.trial, args.size, args.batch, args.steps, args.warmup)
    print("RESULT " + json.dumps({"times": times, "peak_start": start, "peak_end": matmul_gflops(), **info}))


def run_trial(trial, args):
    """A trial in a fresh process; its RESULT, or None (with what it printed) when it failed."""
    command = [sys.executable, os.path.abspath(__file__), "--child", trial, "--size", str(args.size),
               "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        print(f"{trial}: failed\n{proc.stderr[-2000:]}", flush=True)
        return None
    return json.loads(line[len("RESULT "):])


def summary(trial, results, batch):
    """images/s median [min-max] over every timed step of ``results`` (one per round), and the peaks."""
    import numpy as np

    rates = np.array([batch / t for r in results for t in r["times"]])
    peaks = [p for r in results for p in (r["peak_start"], r["peak_end"])]
    first = results[0]
    share = np.median(rates) * first["gflop_per_image"] / np.median(peaks)
    return {"median": float(np.median(rates)), "min": float(rates.min()), "max": float(rates.max()),
            "gflop_per_image": first["gflop_per_image"], "share_of_peak": float(share), "threads": first["threads"],
            "peaks": [round(p) for p in peaks], "size": first.get("size")}


def main(argv=None):
    """Runs the trials interleaved, each in a fresh process, and prints one table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=448, help="crop / input size of the ResNet50 trials and inference")
    p.add_argument("--batch", type=int, default=16, help="images per step")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (A, B, A, B, ...)")
    p.add_argument("--steps", type=int, default=4, help="timed steps per process")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per process (tracing, allocation)")
    p.add_argument("--only", nargs="+", choices=list(TRIALS), help="these trials only")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--child", choices=list(TRIALS), dest="trial", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.trial:
        return child(args)
    sys.path.insert(0, HERE)
    from machine import header

    print(header()[0])
    worst, cases = check_torch_loss()
    print(f"PyTorch loss vs the authors' code (golden A_losses, {cases} cases x 3 alphas): max relative error "
          f"{worst:.1e}", flush=True)
    if worst > 1e-5:
        sys.exit("the PyTorch loss is not the authors' computation; nothing timed")
    wanted = set(args.only or TRIALS)
    results = {}
    for pair in PAIRS:
        trials = [t for t in pair if t in wanted]
        for _ in range(args.rounds):
            for trial in trials:
                r = run_trial(trial, args)
                if r is not None:
                    results.setdefault(trial, []).append(r)
                    print(f"  {trial}: {args.batch / min(r['times']):.2f} images/s at best "
                          f"(matmul {r['peak_start']:.0f} -> {r['peak_end']:.0f} GFLOP/s)", flush=True)
    table = {t: summary(t, rs, args.batch) for t, rs in results.items()}
    print(f"\nbatch {args.batch}, ResNet50 crops and inference at {args.size}; {args.rounds} rounds x {args.steps} "
          f"timed steps (after {args.warmup} warm-up) per trial")
    print("| trial | what | images/s median [min-max] | GFLOP/image | share of matmul | threads | matmul GFLOP/s "
          "(start, end of each process) |")
    print("|---|---|---|---|---|---|---|")
    for trial, s in table.items():
        at = f" at {s['size']}" if s["size"] else ""
        print(f"| {trial} | {TRIALS[trial][1]}{at}"
              f" | {s['median']:.2f} [{s['min']:.2f}-{s['max']:.2f}] | {s['gflop_per_image']:.1f} | "
              f"{100 * s['share_of_peak']:.1f}% | {s['threads']} | {s['peaks']} |")
    for authors, ours in PAIRS:
        if authors in table and ours in table:
            print(f"{ours} / {authors}: {table[ours]['median'] / table[authors]['median']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
