"""The life of an item, orchestrated: the layer above the domain services.

- next.assignment_next: a worker asks for work and leases an item (or hears why not).
- submit.assignment_submit: a label is checked, decided once by decide.decide_label (pure)
  and written by one of two writers (apps.assignments.records.write_label_sql /
  write_label_orm), then its follow-ups run (review, audit, gold, re-aggregation trigger).
- crowd: bans and suspensions with their leases returned.

Nothing below this package imports it (tests/test_layers.py, import-linter in CI).
"""
