"""The synthetic fine-grained benchmark, where the truth is known: ``diti-sd demo``.

- ``data``: the image generator (a faint fine texture is the class, the background colour its shortcut);
- ``streams``: a seed's splits, drawn the same way by the demo and every script under ``eval/``;
- ``base_model``: training the tiny base models the benchmark runs on (``diti-sd train-base``), and
  ``base_checkpoint`` where a run of it keeps its progress (``--resume``);
- ``demo``, ``scoring``, ``summary``, ``report``: the demo's protocol, how it reads every row off one set
  of UNet calls, its figures and targets, and its report;
- ``ledger``: the record of sealed reads (``docs/reads/``).
"""
