"""Directory (LDAP) access for RuPost: attribute profiles, connections, filters, schema."""
