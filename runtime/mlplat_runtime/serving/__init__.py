"""The serving runtime: ONNX Runtime behind the Open Inference Protocol v2 (REST), with an
admin port for hot swaps and Prometheus metrics.

MLServer's split: logic in plain classes, HTTP a thin layer over them.

    protocol.py    OIP v2 JSON (and binary tensors) <-> numpy, checked against the signature
    model.py       LoadedModel: load, warm up, check samples, predict
    repository.py  name -> serving version; the atomic hot swap; the index
    checker.py     the warm child process that tries a model before this process loads it
    metrics.py     request/inference/load counters rendered as Prometheus text
    http.py        the small HTTP/1.1 protocol both ports run on (+ an ASGI adapter)
    app.py         inference handler: /v2/health/*, /v2, /v2/models/..., /metrics
    admin.py       admin handler (bearer token): /v2/repository/index, .../load, .../unload
    server.py      run_server(ServerConfig): both ports in one process, one uvloop loop
    __main__.py    python -m mlplat_runtime.serving [BUNDLE] --host --port --admin-port ...

Importing this package imports nothing (the check process starts from it). Must not import
textual, mlflow, docker or mlplat_tui.
"""
