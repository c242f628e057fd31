"""One module per area of the panel: a blueprint ``bp`` and a navigation entry ``NAV``
(label, endpoint, level) or None. Register a new area with one line in
``rupost.panel.AREAS``."""
