"""rupost-wizard: the node configurator (silent mode; the dialog screens are in wizard.dialogs)."""
