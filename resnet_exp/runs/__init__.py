"""Stage 3, the runs: experiment rows -> plan -> execute -> one training run -> run folder.

Three folders, by what changes together:

    planning/    what to run
        experiments.py   rows and recipes (pydantic), resolved into RunSpecs
        profiles.yaml    the recipes (paper, the ladder quick128 ... quick2, quick, smoke)
        ladder.yaml, budget.py   --budget: the ladder of schedules and the rule that picks a rung
        plan.py          what each run needs (new, resume, reuse, done), read from the results folder
    executing/   how to run it
        runner.py        the ``run`` command's phases: select -> plan -> execute -> summary
        executors.py     sequential and process-pool executors
        ray_executor.py  Ray tasks, on this machine or a cluster
        ray_storage.py   Ray without a shared filesystem: data out and run files back through Ray
        worker.py        what any executor does with one job: lock, load data, train, copy
    training/    one run
        train.py         the training loop, top to bottom
        callbacks.py     how a measurement hooks into the loop
        signals.py       the layer signals (signals.csv), a callback
        responses.py     Figure 7's layer responses, a callback on the final weights

and, used by all three:

    rundir.py        the run folder (RunDir): files, status, meta.json, log.csv, lock
    device.py        which device a run (or the benchmark) uses, and the default profile there
    bench.py         our training step against a textbook loop, on the current device
"""
