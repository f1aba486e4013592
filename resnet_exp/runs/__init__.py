"""Stage 3, the runs: experiment rows -> plan -> execute -> one training run -> run folder.

    experiments.py   rows and recipes (pydantic), resolved into RunSpecs; profiles.yaml holds the recipes
    plan.py          what each run needs (new, resume, reuse, done), read from the results folder
    runner.py        the ``run`` command's phases: select -> plan -> execute -> summary
    executors.py     sequential and process-pool executors; ray_executor.py: Ray tasks
    ray_storage.py   Ray without a shared filesystem: data out and run files back through Ray
    worker.py        what any executor does with one job: lock, load data, train, copy
    train.py         the training loop of one run, top to bottom
    rundir.py        the run folder (RunDir): files, status, meta.json, log.csv, lock
    responses.py     Figure 7's layer responses, measured from a finished run's weights
    device.py        which device a run (or the benchmark) uses, and the default profile there
    bench.py         our training step against a textbook loop, on the current device
"""
