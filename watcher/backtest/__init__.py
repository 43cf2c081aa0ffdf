"""``watcher backtest``: rules replayed on recorded video, scored against labels.

* :mod:`.labels`: the ground-truth format (shared with the console's feedback export);
* :mod:`.replay`: the replay on a simulated clock, through the daemon's own rule runner;
* :mod:`.score`: episodes against labels (precision, recall, onset delay, false alarms);
* :mod:`.report`: JSON, HTML and PNG output;
* :mod:`.command`: the command line.
"""
