"""Home Assistant MQTT discovery: cameras as devices, alerts as entities, rules as switches.

* :mod:`.topics`: the state and command topics watcher publishes and reads;
* :mod:`.discovery`: the discovery config payloads (pure functions);
* :mod:`.bridge`: keeps Home Assistant in step with the rule engine over one
  ``mqtt`` action's connection.
"""
