"""Training-step throughput of the GPO-VAE module at RPE1 shape (notes.md performance anchor).

One step = loss (K particles) + backward + gradient clipping (100) + Adam step (lr 3e-4, weight
decay 1e-6), on random count batches shaped like RPE1 (8,749 genes, 655 nodes of which 383
perturbed, batch 512, ~12k UMI per cell). Prints steps per second and peak memory.

    python benchmarks/train_step.py                  # CPU or CUDA, whichever is there
    python benchmarks/train_step.py --device cpu --steps 8 --profile
    python benchmarks/train_step.py --config configs/gpo_vae_custom.yaml --genes 1000 --nodes 40 \
        --perturbed 34 --steps 20 --profile           # a shipped config's model, batch size and lr

``--config`` takes the model section, the batch size and the learning rate of a run config (the
shape stays the command line's), so the two families' custom configs can be timed on one screen
shape; ``--profile`` then prints where a step spends its time, by operator and by module.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import torch
from _memory import peak_rss_gb

from gpo_vae.module import GPOVAE, ModelConfig

#: The published training step at this shape on the project's 2-core CPU (notes.md).
ANCHOR_STEPS_PER_S = 0.088


def synthetic_batch(
    n_cells: int, n_genes: int, n_nodes: int, n_perturbed: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """A batch with realistic sparsity: NB counts around 12k UMI, one-hot D, ~10 % QC-fail."""
    gene_share = torch.exp(1.5 * torch.randn(n_genes, generator=generator))
    gene_share = gene_share / gene_share.sum()
    library = 12_000.0 * torch.exp(0.25 * torch.randn(n_cells, 1, generator=generator))
    rate = library * gene_share * torch.distributions.Gamma(2.0, 2.0).sample((n_cells, n_genes))
    counts = torch.poisson(rate, generator=generator)
    dosage = torch.zeros(n_cells, n_nodes)
    node = torch.randint(0, n_perturbed, (n_cells,), generator=generator)
    treated = torch.rand(n_cells, generator=generator) > 0.07
    dosage[torch.arange(n_cells)[treated], node[treated]] = 1.0
    qc = (torch.rand(n_cells, generator=generator) < 0.1).float()
    has_cf = torch.rand(n_cells, generator=generator) < 0.5
    cf_counts = torch.poisson(rate.roll(1, dims=0), generator=generator) * has_cf.unsqueeze(1)
    delta_x = torch.randn(n_cells, n_nodes, generator=generator).abs()
    return {
        "X": counts,
        "D": dosage,
        "qc": qc,
        "library_size": counts.sum(1),
        "delta_x": delta_x,
        "cf_X": cf_counts,
        "has_cf": has_cf,
    }


def peak_rss_gib() -> float:
    return peak_rss_gb()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 = autocast")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after warm-up)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--genes", type=int, default=8749)
    parser.add_argument("--nodes", type=int, default=655)
    parser.add_argument("--perturbed", type=int, default=383)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--particles", type=int, default=5)
    parser.add_argument("--sams-vae", action="store_true", help="the SAMS-VAE baseline configuration")
    parser.add_argument("--profile", action="store_true", help="print the top operators (torch.profiler)")
    parser.add_argument("--config", help="a run config YAML: its model section, batch size and lr")
    args = parser.parse_args()
    lr = 3e-4
    if args.config:
        from gpo_vae.run_config import load_run_config

        run_config = load_run_config(args.config)
        args.batch_size, lr = run_config.training.batch_size, run_config.training.lr

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    batches = [
        {
            k: v.to(device)
            for k, v in synthetic_batch(
                args.batch_size, args.genes, args.nodes, args.perturbed, generator
            ).items()
        }
        for _ in range(3)
    ]
    log_counts = torch.log1p(torch.cat([b["X"] for b in batches]))
    counts_per_node = torch.zeros(args.nodes)
    counts_per_node[: args.perturbed] = 100.0
    if args.config:
        config = run_config.model
        args.particles = config.n_particles
    else:
        config = (
            ModelConfig.sams_vae(n_particles=args.particles)
            if args.sams_vae
            else ModelConfig(n_particles=args.particles)
        )
    model = GPOVAE(
        args.genes,
        args.nodes,
        args.perturbed,
        counts_per_node,
        1000.0,
        log_counts.mean(0).cpu(),
        log_counts.std(0).cpu(),
        config,
    ).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-6)
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if args.dtype == "bf16"
        else contextlib.nullcontext()
    )

    def step(i: int) -> float:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            out = model.loss(batches[i % len(batches)])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
        optimizer.step()
        return out.loss.item()

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for i in range(args.warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    synchronize()
    load_before = os.getloadavg()[0]
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(args.steps):
        loss = step(i)
    synchronize()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    rate = args.steps / elapsed
    print(
        f"device={device.type} dtype={args.dtype} threads={torch.get_num_threads()} "
        f"genes={args.genes} nodes={args.nodes} batch={args.batch_size} particles={args.particles}"
    )
    print(
        f"{rate:.3f} steps/s ({elapsed / args.steps:.2f} s/step over {args.steps} steps), last loss {loss:.1f}"
    )
    # other processes on the same cores slow the wall clock down: the load average says when
    print(
        f"process CPU {cpu / args.steps:.2f} s/step; 1-min load average {load_before:.2f} -> {os.getloadavg()[0]:.2f}"
    )
    if device.type == "cpu":
        print(f"vs published 0.088 steps/s on this CPU: {rate / ANCHOR_STEPS_PER_S:.1f}x (target >= 3x)")
    print(f"peak RSS {peak_rss_gib():.2f} GiB")
    if device.type == "cuda":
        print(f"peak CUDA allocated {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    if args.profile:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            step(0)
            synchronize()
        sort = "cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=sort, row_limit=25))


if __name__ == "__main__":
    main()
