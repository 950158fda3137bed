"""The key store: per-subject data keys and per-tenant pseudonym secrets, wrapped under a key-encryption key.

The query service hosts it (its own schema and role, apart from the read model): producers fetch keys through a
signed request, readers unseal with them, and `audit-query subjects erase` destroys them.
"""
