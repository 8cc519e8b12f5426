"""The harness behind ``diti-sd eval``: every method on the same k-shot splits, its choices made on
validation, its cost beside its accuracy.

- ``methods``: the names the command accepts (loads no torch);
- ``config``: ``EvalConfig``;
- ``frozen``: the frozen-encoder rivals (zero-shot, Tip-Adapter(-F), linear probe) on each encoder;
- ``diffusion``: DiTi-SD's adapter sets (fitted once per split and settings) and Stable Diffusion zero-shot;
- ``harness``: ``Evaluation``, the loop, the prefilters and ensembles, the run files;
- ``report``: results.json, README.md, the figures, the accuracy-against-cost table and Pareto front.
"""
