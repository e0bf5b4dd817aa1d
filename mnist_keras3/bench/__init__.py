"""The training-speed benchmark (`python -m mnist_keras3.bench`, or scripts/benchmark.py).

report.py  the command: plans the jobs, runs each in a subprocess, the table, ratios, time to accuracy;
           with --recipe FILE --seeds N, a recipe's seconds to 99.0% / 99.5% beside two peers
worker.py  one job in its own process: a Keras training run, or the plain PyTorch reference loop
           (the tutorial model, or a recipe's model written in torch)
reference_models.py  those plain-PyTorch models, one place
tables.py  the speed, time-to-accuracy and profile tables as markdown, from the rows the JSON holds
           (the command prints them; scripts/report.py renders them into README.md and docs/)
"""
