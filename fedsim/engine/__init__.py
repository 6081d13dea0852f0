"""The server side's engine: the round loop and what runs it.

  simulation.py   run()/resume()/run_on_grid(): ServerRun, signals, the ServerApp and
                  the ClientApp on Flower's simulation engine
  ray_backend.py  Ray started private to this machine (loopback, token) or joined
  loop.py         RoundLoop: configure -> exchange -> account -> aggregate -> evaluate,
                  with observer hooks
  observers.py    metrics line, checkpoints, progress, tracking, stops, audits
  grid.py         VirtualClientGrid: cohorts of virtual clients per Flower message
  checkpoint.py   atomic checkpoints and the resume plan
  tracking.py     optional TensorBoard / MLflow observer backend

It imports no client module (tests/test_architecture.py): the client side is handed
in by the composition root, fedsim.launch.
"""
