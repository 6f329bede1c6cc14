"""Run management: experiments by name (`experiment`), work directories (`workdir`), claims and their
statistics (`claims`), reports (`report`), sweeps (`sweep`), the models table and plotting helpers.
Above the engine: it runs experiments, which train through `nnbasics.engine.fit`."""
