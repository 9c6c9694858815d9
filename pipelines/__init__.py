"""The label job on Ray: what needs Ray and nothing else.

    job.py        run_label(LabelJob): plan, the Ray Data pipeline, isolation, finish
    replica.py    the model replica (a Ray Data actor) built from a ReplicaSpec
    writer.py     the driver's writer: rows into committed Parquet parts, each key once
    isolation.py  finding the input that kills its replica
    output.py     the output folder and what --resume reads back
    finish.py     COCO files, exports, previews and summary.json at the end
    cluster.py    which Ray the job runs on, said plainly
    previews.py   annotated pictures of rows

The source (sources/), the tasks (tasks/), the answer→row step (labeling/), the rows (rows/) and the exports
(exports/) know nothing of Ray; `python -m jobs.label` is the command line.
"""
