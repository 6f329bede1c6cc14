"""One module per lecture comparison: `get_config(preset)`, `run(config, workdir)`, `SWEEPS`.

Run one with `nnbasics run NAME [--quick]` or `python -m experiments.NAME [--quick]`.
"""
