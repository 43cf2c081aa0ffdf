"""Cluster mode: several ``watcher run`` processes sharing one PostgreSQL state.

::

    groups.py       camera groups: the streams that multi-stream rules tie together
    assign.py       which live instance should own each group (rendezvous hashing, balanced)
    config.py       the ``cluster:`` section (instance_id, heartbeat, lease)
    leases.py       members, group leases and fencing tokens; the store protocol, in memory
    coordinator.py  the loop: heartbeat, membership, acquire / renew / release, handover
    rounds.py       the coordinator's bookkeeping: held leases, round results, counts

The unit of work is a camera group. Each group is owned by exactly one live
instance through a lease row carrying a fencing epoch that only grows; every
alert-state, event and delivery write names the writer's epoch, and a stale
one is refused.
"""
