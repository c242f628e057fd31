"""/api/v1/distribution-lists: static and LDAP-filtered lists, through
rupost.services.distribution_lists."""
from __future__ import annotations

from flask import g, url_for
from flask.views import MethodView

from .common import PageArgs, blueprint, documented_headers, idempotent, level, page_of, stale, with_etag
from .jobs import accepted
from .schemas import (
    DistributionListArgs,
    DistributionListCreateSchema,
    DistributionListPage,
    DistributionListPatchSchema,
    DistributionListSchema,
    JobSchema,
    MembersChangedSchema,
    MembersSchema,
)

bp = blueprint("distribution_lists", "/distribution-lists", "Distribution lists: static members and/or the "
               "members an LDAP filter selects.")
IF_MATCH = [{"in": "header", "name": "If-Match", "schema": {"type": "string"}, "required": False}]


@bp.route("")
class DistributionLists(MethodView):
    @level("any")
    @bp.arguments(DistributionListArgs, location="query")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, DistributionListPage)
    def get(self, args, **page):
        return page_of(g.rp.distribution_lists.list(args.get("domain")), page)

    @idempotent
    @level("any")
    @bp.arguments(DistributionListCreateSchema)
    @bp.response(201, DistributionListSchema)
    @bp.doc(**documented_headers())
    def post(self, data):
        created = g.rp.distribution_lists.add(data["address"], members=data["members"], filter_name=data["filter"],
                                              sender_policy=data["sender_policy"], display_name=data["display_name"])
        created.pop("update", None)
        return created, 201, {"Location": url_for("api_distribution_lists.DistributionList",
                                                  address=created["address"])}


@bp.route("/<string:address>")
class DistributionList(MethodView):
    @level("any")
    @bp.response(200, DistributionListSchema)
    def get(self, address):
        return with_etag(g.rp.distribution_lists.show(address))

    @level("any")
    @bp.arguments(DistributionListPatchSchema)
    @bp.response(200, DistributionListSchema)
    @bp.doc(parameters=IF_MATCH)
    def patch(self, data, address):
        refused = stale(g.rp.distribution_lists.show(address))
        if refused is not None:
            return refused
        g.rp.distribution_lists.set(address, sender_policy=data.get("sender_policy"), enabled=data.get("enabled"),
                                    max_drop_share=data.get("max_drop_share"))
        return with_etag(g.rp.distribution_lists.show(address))

    @level("any")
    @bp.response(204)
    def delete(self, address):
        g.rp.distribution_lists.remove(address)
        return ""


@bp.route("/<string:address>/members")
class Members(MethodView):
    @level("any")
    @bp.arguments(MembersSchema)
    @bp.response(200, MembersChangedSchema)
    def post(self, data, address):
        """Add static members."""
        return {"changed": g.rp.distribution_lists.add_members(address, data["members"])}



@bp.route("/<string:address>/members/remove")
class MembersRemoval(MethodView):
    @level("any")
    @bp.arguments(MembersSchema)
    @bp.response(200, MembersChangedSchema)
    def post(self, data, address):
        """Remove static members."""
        return {"changed": g.rp.distribution_lists.remove_members(address, data["members"])}


def _update_work(address: str | None):
    """The job of `rupost distribution-lists update [ADDRESS]`: each dynamic list's members
    asked of its directory (a list whose directory fails keeps its members, reported)."""
    def work(rp, progress):
        progress(5, f"asking the directories for the members of {address or 'every dynamic list'}")
        results = rp.distribution_lists.update(address)
        return {"result": ", ".join(f"{r['address']}: {r['status']}" for r in results) or "no dynamic lists",
                "lists": results}

    return work


@bp.route("/update")
class Update(MethodView):
    @level("super")
    @bp.response(202, JobSchema)
    def post(self):
        """Update the members of every dynamic list from its LDAP filter, as a job."""
        return accepted("lists-update", _update_work(None))


@bp.route("/<string:address>/update")
class ListUpdate(MethodView):
    @level("super")
    @bp.response(202, JobSchema)
    @bp.doc(parameters=IF_MATCH)
    def post(self, address):
        """Update one dynamic list's members from its LDAP filter, as a job; with `If-Match`, only while the
        list is as the client read it (412 otherwise)."""
        refused = stale(g.rp.distribution_lists.show(address))
        if refused is not None:
            return refused
        return accepted("lists-update", _update_work(address))
