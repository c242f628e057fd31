"""The ``ruPostMailAccount`` schema extension for FreeIPA and ALD Pro (guide §7.4).

Every RuPost user in FreeIPA / ALD Pro carries the auxiliary class
``ruPostMailAccount`` (OID 1.3.6.1.4.1.57980.3.1.1.1), which allows the
attribute ``proxyAddresses`` (OID 1.3.6.1.4.1.57980.3.1.2.1), in the same syntax
as Active Directory's (``SMTP:primary``, ``smtp:extra``). Active Directory needs
no extension. The guide leaves the syntax open; we use a case-insensitive
directory string with equality and substring matching, so ``(proxyAddresses=smtp:x@y)``
and ``(proxyAddresses=*x@y)`` filters work.

``rupost ldap-domains schema`` prints these definitions for the directory
administrator: OpenLDAP ``schema`` syntax (slapd.conf ``include``) or LDIF for
389 Directory Server (FreeIPA, ALD Pro: ``ldapmodify`` against ``cn=schema``).
"""
from __future__ import annotations

PROXY_ADDRESSES_OID = "1.3.6.1.4.1.57980.3.1.2.1"
MAIL_ACCOUNT_OID = "1.3.6.1.4.1.57980.3.1.1.1"

_ATTRIBUTE = (f"( {PROXY_ADDRESSES_OID} NAME 'proxyAddresses' DESC 'RuPost: all mail addresses of the account' "
              "EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch "
              "SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )")
_CLASS = (f"( {MAIL_ACCOUNT_OID} NAME 'ruPostMailAccount' DESC 'RuPost mail account' "
          "SUP top AUXILIARY MAY ( proxyAddresses $ mail ) )")


def openldap_schema() -> str:
    return ("# RuPost schema extension (guide App.1 §2.1)\n"
            f"attributetype {_ATTRIBUTE}\n\nobjectclass {_CLASS}\n")


def ds389_ldif() -> str:
    """For 389 Directory Server (FreeIPA, ALD Pro): ldapmodify -D 'cn=Directory Manager' -W -f FILE."""
    return ("dn: cn=schema\nchangetype: modify\nadd: attributeTypes\n"
            f"attributeTypes: {_ATTRIBUTE[:-2]} X-ORIGIN 'RuPost' )\n-\nadd: objectClasses\n"
            f"objectClasses: {_CLASS[:-2]} X-ORIGIN 'RuPost' )\n")
