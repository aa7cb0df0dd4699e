"""In-container stage runner for Google's automl EfficientDet (TF1 estimator code).

    python3 -m effdetlab.stages {train,export,benchmark,infer,status,stop,commands,crosscheck}
                                --config /work/run/config.json

Every stage reads one JSON config (effdetlab.stages.config documents the keys), runs
automl's own scripts (main.py / model_inspect.py) as subprocesses through a flag
dialect (effdetlab.stages.dialect: the PyPI-vendored copy or a git checkout, 2020 or
later flag names) and writes machine-readable results into config["run_dir"]:

  train.log, progress.jsonl, eval.jsonl, train_status.json, train.json     train
  export.json, export.log (+ saved_model/, *.tflite)                        export
  benchmark.json, benchmark/logs/*.log                                     benchmark
  infer.json, infer/*.jpg, infer.log                                       infer
  crosscheck.json                                                          crosscheck

Exit status: 0 ok, 1 automl failed (see the named log), 2 bad input (one-line message).
"""
