"""``serve --ray``: the jobs service places its jobs' sources on the GPUs of a Ray cluster.

The service stays the controller and the API (:mod:`.controller`, :mod:`.routes`); one detached,
named actor per GPU slot (:mod:`.actor`) hosts an engine running *parts* — one source of one job
each (:mod:`.parts`) — as sub-jobs of a local supervisor (:mod:`.worker`). Only specs and status
travel through Ray; frames never do. Nothing here imports Ray at module level except
:mod:`.actor`, which only ``serve --ray`` and the actors load (docs/scale-out.md).
"""
