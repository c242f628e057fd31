"""/api/v1/ldap-domains: the directories (Active Directory, FreeIPA, ALD Pro) whose users
become mailboxes, through the same service as `rupost ldap-domains` and the panel's page:
reading and testing for node-wide tokens, changing and syncing (a job) for superadministrators;
which directory groups and users are administrators, and the Kerberos keytab, for
superadministrators only (an administrator mapping grants roles; the keytab is a secret)."""
from __future__ import annotations

from flask import g, url_for
from flask.views import MethodView

from ..services.directory_kerberos import KerberosError
from .common import PageArgs, blueprint, documented_headers, idempotent, level, page_of, stale, with_etag
from .jobs import accepted
from .problems import problem
from .schemas import JobSchema
from .schemas_admin import (
    LdapAccountArgs,
    LdapAccountPage,
    LdapDomainCreateSchema,
    LdapDomainPage,
    LdapDomainPatchSchema,
    LdapDomainRemoveArgs,
    LdapDomainRemovedSchema,
    LdapDomainSchema,
    LdapSyncSchema,
    LdapTestArgs,
    LdapTestSchema,
    LdapWritebackRunSchema,
    LdapWritebackSetSchema,
    LdapWritebackSettingsSchema,
)
from .schemas_directory import (
    LdapAdminMappingCreateSchema,
    LdapAdminMappingPage,
    LdapAdminMappingRemoveArgs,
    LdapAdminMappingSchema,
    LdapKerberosSetSchema,
    LdapKerberosStateSchema,
)

bp = blueprint("ldap_domains", "/ldap-domains", "LDAP domains: directories whose users are materialised as "
               "mailboxes. Not for domain administrators' tokens.")
IF_MATCH = [{"in": "header", "name": "If-Match", "schema": {"type": "string"}, "required": False}]


@bp.route("")
class LdapDomains(MethodView):
    @level("global")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, LdapDomainPage)
    def get(self, **page):
        return page_of(g.rp.directories.list(), page)

    @idempotent
    @level("super")
    @bp.arguments(LdapDomainCreateSchema)
    @bp.response(201, LdapDomainSchema)
    @bp.doc(**documented_headers())
    def post(self, data):
        """Add an LDAP domain; unless `check` is false, a bind and one search must succeed first."""
        name, kind, uris = data.pop("name"), data.pop("kind"), data.pop("uris")
        made = g.rp.directories.add(name, kind, uris, data.pop("base_dn"), data.pop("bind_dn"),
                                    data.pop("bind_password"), **data)
        return made, 201, {"Location": url_for("api_ldap_domains.LdapDomain", name=made["name"])}


@bp.route("/<string:name>")
class LdapDomain(MethodView):
    @level("global")
    @bp.response(200, LdapDomainSchema)
    def get(self, name):
        return with_etag(g.rp.directories.show(name))

    @level("super")
    @bp.arguments(LdapDomainPatchSchema)
    @bp.response(200, LdapDomainSchema)
    @bp.doc(parameters=IF_MATCH)
    def patch(self, data, name):
        """Change its settings (a setting left out is kept; the password is never shown)."""
        refused = stale(g.rp.directories.show(name))
        if refused is not None:
            return refused
        g.rp.directories.update(name, **data)
        return with_etag(g.rp.directories.show(name))

    @level("super")
    @bp.arguments(LdapDomainRemoveArgs, location="query")
    @bp.response(200, LdapDomainRemovedSchema)
    def delete(self, args, name):
        return g.rp.directories.remove(name, force=args["force"])


@bp.route("/<string:name>/test")
class LdapDomainTest(MethodView):
    @level("global")
    @bp.arguments(LdapTestArgs, location="query")
    @bp.response(200, LdapTestSchema)
    def post(self, args, name):
        """Reach each server, bind, read the base DN and a sample of users; the report says what failed."""
        return g.rp.directories.test(name, sample=args["sample"])


@bp.route("/<string:name>/sync")
class LdapDomainSync(MethodView):
    @level("super")
    @bp.arguments(LdapSyncSchema)
    @bp.response(202, JobSchema)
    def post(self, data, name):
        """Read the directory's users and materialise them (mailboxes, aliases) as a job."""
        directory = g.rp.directories.show(name)["name"]  # 404 now, not in the job
        force, dry_run = data["force"], data["dry_run"]

        def work(rp, progress):
            progress(5, f"reading the users of LDAP domain {directory}")
            return dict(rp.directories.sync(directory, force=force, dry_run=dry_run))

        return accepted("ldap-sync", work)


@bp.route("/<string:name>/writeback")
class LdapDomainWriteback(MethodView):
    @level("super")
    @bp.arguments(LdapWritebackSetSchema)
    @bp.response(200, LdapWritebackSettingsSchema)
    def put(self, data, name):
        """Turn write-back (guide §7.5) on with its pattern, mail domain and separate write-back
        account, or off (`enabled` false); the account's bind is tested unless `check` is false."""
        return g.rp.directories.writeback_set(name, **data)

    @level("super")
    @bp.arguments(LdapWritebackRunSchema)
    @bp.response(202, JobSchema)
    def post(self, data, name):
        """Write the generated primary addresses and the RuPost aliases to the directory's
        accounts, then sync, as a job; its result lists per entry what is added and removed and
        what is skipped, with the reason (`dry_run`: nothing is written)."""
        directory = g.rp.directories.show(name)["name"]  # 404 now, not in the job
        dry_run = data["dry_run"]

        def work(rp, progress):
            progress(5, f"reading the accounts of LDAP domain {directory}")
            return rp.directories.writeback(directory, dry_run=dry_run)

        return accepted("ldap-writeback", work)


@bp.route("/<string:name>/accounts")
class LdapAccounts(MethodView):
    @level("global")
    @bp.arguments(LdapAccountArgs, location="query")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, LdapAccountPage)
    def get(self, args, name, **page):
        """The directory's users materialised by the last sync (the first 10,000), with their state."""
        name = g.rp.directories.show(name)["name"]  # 404 for an unknown LDAP domain, not an empty page
        return page_of(g.rp.directories.accounts(name, args.get("state"), limit=10_000), page)



@bp.route("/<string:name>/admin-mappings")
class LdapAdminMappings(MethodView):
    """The directory's groups and users that log in to the panel as administrators (their
    own directory password), with the role and, for a domain_admin, the mail domains."""

    @level("super")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, LdapAdminMappingPage)
    def get(self, name, **page):
        name = g.rp.directories.show(name)["name"]  # 404 for an unknown LDAP domain, not an empty page
        return page_of([m for m in g.rp.directories.admin_map_list() if m["directory"] == name], page)

    @idempotent
    @level("super")
    @bp.arguments(LdapAdminMappingCreateSchema)
    @bp.response(201, LdapAdminMappingSchema)
    @bp.doc(**documented_headers())
    def post(self, data, name):
        """Map a group (its DN; nested groups count) or a user (its login) to a role."""
        name = g.rp.directories.show(name)["name"]
        return g.rp.directories.admin_map_add(name, data["kind"], data["value"], data["role"], data["domains"]), 201

    @level("super")
    @bp.arguments(LdapAdminMappingRemoveArgs, location="query")
    @bp.response(204)
    def delete(self, args, name):
        """Remove a mapping; its administrators cannot log in with it any more."""
        name = g.rp.directories.show(name)["name"]
        g.rp.directories.admin_map_remove(name, args["kind"], args["value"])
        return "", 204


@bp.route("/<string:name>/kerberos")
class LdapKerberos(MethodView):
    """Kerberos single sign-on of an Active Directory domain: whether a keytab is set, its
    realm and principals (never the keytab itself)."""

    @level("global")
    @bp.response(200, LdapKerberosStateSchema)
    def get(self, name):
        shown = g.rp.directories.show(name)
        return {"name": shown["name"], **shown["kerberos"]}

    @level("super")
    @bp.arguments(LdapKerberosSetSchema)
    @bp.response(200, LdapKerberosStateSchema)
    def put(self, data, name):
        """Set the keytab (base64): it is checked with klist, kinit and kvno against the KDCs
        before it is stored; a keytab that does not fit is 422 with the reason, and nothing
        changes. A deploy puts it to use."""
        try:
            return g.rp.directories.kerberos_set(name, data["keytab"], kdcs=data["kdcs"])
        except KerberosError as exc:  # the keytab, its realm or its keys: the request's content
            return problem(422, str(exc))

    @level("super")
    @bp.response(200, LdapKerberosStateSchema)
    def delete(self, name):
        """Turn Kerberos off (the keytab is forgotten); a deploy stops dovecot's GSSAPI."""
        return g.rp.directories.kerberos_off(name)
