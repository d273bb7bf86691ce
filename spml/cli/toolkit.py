"""`spml toolkit mfu`: the profiling toolkit's arithmetic from the terminal."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(help="Profiling toolkit: MFU and peak FLOPS.", no_args_is_help=True)


@app.command()
def mfu(
    flops_per_step: Annotated[float, typer.Option(help="FLOPs of one optimizer step.")],
    step_time: Annotated[float, typer.Option(help="Median steady step time, seconds.")],
    gpu: Annotated[str | None, typer.Option(help="GPU name (default: the local GPU).")] = None,
    n_gpus: Annotated[int, typer.Option(help="GPUs the step ran on.")] = 1,
    dtype: Annotated[str, typer.Option(help="bf16, fp16, tf32, fp32 or fp8.")] = "bf16",
    estimate: Annotated[bool, typer.Option(
        help="For a GPU missing from the table, estimate its peak (labelled ESTIMATED).")
    ] = False,
) -> None:
    """Print MFU = flops / step time / (n_gpus x peak), the peak used and its source.

    Exits 0 with the MFU, 1 when it is N/A (unknown GPU, no GPU, dtype without a figure),
    2 on bad input.
    """
    from spml.toolkit.profiling.mfu import format_mfu_report, mfu_for_gpu

    result = mfu_for_gpu(flops_per_step, step_time, gpu=gpu, n_gpus=n_gpus, dtype=dtype,
                         estimate=estimate)
    typer.echo(format_mfu_report(result))
    if result.mfu is None:
        raise typer.Exit(1)
