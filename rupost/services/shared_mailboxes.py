"""Shared mailboxes: a team's info@ that several people read and answer from.

A shared mailbox is a mailbox row that cannot log in (its password is ``!shared``, which
dovecot's password_query skips and SOGo cannot verify) plus a ``shared_mailboxes`` row. It
receives mail and has a quota like any mailbox. Its members open it in their own IMAP
session under ``Shared/ADDRESS/`` (dovecot's shared namespace and ACL plugin):

- which shared mailboxes a user sees is served live by the ``lookup_shared_boxes`` view
  (dovecot's acl_shared_dict on the SQL dict): adding a member changes a row, no file;
- what a member may do there is an IMAP ACL (RFC 4314 letters) that dovecot's vfile ACL
  backend reads from the ``dovecot-acl`` file in the shared mailbox's own storage. Dovecot
  2.3 has no other ACL backend: the file is derived from ``shared_mailbox_members`` (the
  source of truth) and rewritten whole after every change, by ``sync_acl``. Folders without
  an ACL file of their own take the INBOX's (acl_defaults_from_inbox), so one file covers
  the mailbox.
"""
from __future__ import annotations

import builtins
import logging
import os
import pwd
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from .. import validation
from ..db.directory_models import DistributionList
from ..db.models import Alias, Mailbox
from ..db.shared_models import SharedMailbox, SharedMailboxGroup, SharedMailboxMember
from ..errors import ConflictError, NotFoundError, RuPostError, ValidationError
from .cache import accounts_changed

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from sqlalchemy.orm import Session

    from . import Services

log = logging.getLogger("rupost.shared_mailboxes")

NO_LOGIN = "!shared"  # never a valid hash: neither dovecot nor SOGo accepts a password for it
# the rights an administrator grants, as IMAP ACL letters (RFC 4314); "l" (see the mailbox)
# comes with every right: a member who cannot list the mailbox could not use any other
RIGHTS = {
    "read": "rs",         # read messages, keep their \Seen flag
    "write": "w",         # set flags and keywords other than \Seen and \Deleted
    "insert": "ipk",      # add messages (copy or move in, append, post) and create folders
    "delete": "tex",      # mark \Deleted, expunge, delete folders
}
# no "a" (administer), for the owner either: an IMAP SETACL would make the ACL file differ
# from the members kept here, and the next rewrite would silently undo it; dovecot refuses
# SETACL without "a" (NO [NOPERM]), so rights change only through rupost
ALL_LETTERS = "lrwstipekx"
ACL_FILE = "dovecot-acl"


class SharedMailboxError(RuPostError):
    pass


def rights_letters(rights: str | builtins.list[str]) -> str:
    """"read,write" (or a list) -> the ACL letters, in RFC 4314's order."""
    names = [r.strip().lower() for r in (rights.split(",") if isinstance(rights, str) else rights) if r.strip()]
    if not names:
        raise ValidationError(f"no rights given: use any of {', '.join(RIGHTS)} (comma-separated)")
    if "administer" in names:
        raise ValidationError("the administer right is not granted: members' rights change through rupost "
                              "(CLI, panel, API), not over IMAP SETACL")
    unknown = [n for n in names if n not in RIGHTS]
    if unknown:
        raise ValidationError(f"unknown right {unknown[0]!r}: use any of {', '.join(RIGHTS)}")
    letters = set("l" + "".join(RIGHTS[n] for n in names))
    return "".join(c for c in ALL_LETTERS if c in letters)


def rights_names(letters: str) -> builtins.list[str]:
    return [name for name, part in RIGHTS.items() if set(part) <= set(letters)]


def render_acl(members: builtins.list[tuple[str, str]], groups: Sequence[tuple[str, str]] = ()) -> str:
    """The vfile ACL of a shared mailbox: the owner keeps every right (a file without an
    owner line would leave delivery and quota work to nobody), then one line per member and
    one per group (``group=LIST``: dovecot matches it against the user's acl_groups, which
    its userdb lookup reads live from the list's members)."""
    lines = ([f"owner {ALL_LETTERS}"] + [f"user={address} {letters}" for address, letters in sorted(members)]
             + [f"group={address} {letters}" for address, letters in sorted(groups)])
    return "\n".join(lines) + "\n"


class SharedMailboxService:
    def __init__(self, app: Services) -> None:
        self.app = app

    # ------------------------------------------------------------------ the rows
    def add(self, address: str, *, display_name: str = "", quota: str | int = 0, description: str = "") -> dict:
        local, domain_name = validation.address(address)
        full = f"{local}@{domain_name}"
        quota_bytes = validation.size_bytes(quota)
        try:
            with self.app.dbs.session("data") as s:
                domain = self.app.domains.get(s, domain_name)
                if s.scalar(select(Alias.id).where(Alias.address == full)):
                    raise ConflictError(f"{full} is already an alias")
                if s.scalar(select(DistributionList.id).where(DistributionList.address == full)):
                    raise ConflictError(f"{full} is already a distribution list")
                s.add(Mailbox(domain_id=domain.id, local_part=local, address=full, password_hash=NO_LOGIN,
                              display_name=(display_name or local).strip()[:256], quota_bytes=quota_bytes,
                              enabled=True))
                s.flush()
                s.add(SharedMailbox(address=full, description=description.strip()))
                s.flush()
        except IntegrityError:
            raise ConflictError(f"{full} already exists (a mailbox or a shared mailbox)") from None
        # no ACL file yet: without one dovecot gives the owner every right and nobody else any
        self.write_quota_limit(full)
        self.app.audit.record("shared_mailbox.add", full, quota_bytes=quota_bytes)
        return self.show(full)

    def write_quota_limit(self, address: str) -> None:
        """Have dovecot write the shared mailbox's own limit into its ``maildirsize`` (a
        quota recalculation run as the mailbox): members' sessions take the limit from that
        file (the userdb's quota_rule is forced, ``*``, only for the user it names, ``?`` for
        the owners of the shared namespaces it opens). Best effort: the mailbox exists
        either way, and its first delivery writes the same file."""
        try:
            self._dovecot(["quota", "recalc", "-u", address])
        except SharedMailboxError as exc:
            log.warning("the quota limit of %s is not written yet (its first delivery will): %s", address, exc)

    def _get(self, session: Session, address: str) -> SharedMailbox:
        local, domain = validation.address(address)
        self.app.require_domain(domain)
        shared = session.scalar(select(SharedMailbox).where(SharedMailbox.address == f"{local}@{domain}"))
        if shared is None:
            raise NotFoundError(f"shared mailbox {local}@{domain} does not exist (rupost shared-mailboxes list)")
        return shared

    def _members(self, session: Session, shared: SharedMailbox) -> builtins.list[tuple[str, str]]:
        rows = session.execute(select(SharedMailboxMember.member, SharedMailboxMember.rights)
                               .where(SharedMailboxMember.shared_id == shared.id)
                               .order_by(SharedMailboxMember.member))
        return [(r.member, r.rights) for r in rows]

    def _groups(self, session: Session, shared: SharedMailbox) -> builtins.list[tuple[str, str]]:
        rows = session.execute(select(DistributionList.address, SharedMailboxGroup.rights)
                               .join(SharedMailboxGroup, SharedMailboxGroup.list_id == DistributionList.id)
                               .where(SharedMailboxGroup.shared_id == shared.id)
                               .order_by(DistributionList.address))
        return [(r.address, r.rights) for r in rows]

    def show(self, address: str) -> dict:
        with self.app.dbs.session("data") as s:
            shared = self._get(s, address)
            mailbox = s.scalar(select(Mailbox).where(Mailbox.address == shared.address))
            assert mailbox is not None  # the foreign key
            return {"address": shared.address, "display_name": mailbox.display_name,
                    "quota_bytes": mailbox.quota_bytes, "description": shared.description,
                    "members": [{"address": a, "rights": rights_names(r), "acl": r, "group": False}
                                for a, r in self._members(s, shared)]
                    + [{"address": a, "rights": rights_names(r), "acl": r, "group": True}
                       for a, r in self._groups(s, shared)]}

    def list(self, domain: str | None = None) -> builtins.list[dict]:
        with self.app.dbs.session("data") as s:
            query = select(SharedMailbox.address).order_by(SharedMailbox.address)
            if domain:
                query = query.where(SharedMailbox.address.endswith("@" + validation.domain_name(domain)))
            addresses = [a for a in s.scalars(query) if self.app.in_scope(a.rpartition("@")[2])]
        return [self.show(a) for a in addresses]

    def remove(self, address: str) -> None:
        """Remove the shared mailbox (its rows; the stored mail stays on disk, like a mailbox's)."""
        with self.app.dbs.session("data") as s:
            shared = self._get(s, address)
            full = shared.address
            s.execute(delete(Mailbox).where(Mailbox.address == full))  # cascades to members and send rights
        accounts_changed(self.app)
        self.app.audit.record("shared_mailbox.remove", full)

    # ------------------------------------------------------------------ members
    def set_member(self, address: str, member: str, rights: str | builtins.list[str] = "read") -> dict:
        """Grant `member` (a mailbox of any hosted domain, or a distribution list: a group
        whose current members hold the rights) `rights` on the shared mailbox, replacing what
        it had."""
        letters = rights_letters(rights)
        member_address = "@".join(validation.address(member))
        with self.app.dbs.session("data") as s:
            shared = self._get(s, address)
            if member_address == shared.address:
                raise ValidationError("a shared mailbox cannot be its own member")
            group_id = s.scalar(select(DistributionList.id).where(DistributionList.address == member_address))
            if group_id is not None:
                self._set_row(s, SharedMailboxGroup, (shared.id, group_id), letters)
            else:
                self._check_member(s, member_address)
                self._set_row(s, SharedMailboxMember, (shared.id, member_address), letters)
            full = self._write_acl(s, shared)  # a failure here rolls the change back
        if group_id is not None:
            accounts_changed(self.app)  # the members' cached userdb answers lack the group in acl_groups
        self.app.audit.record("shared_mailbox.member", full, member=member_address, rights=letters,
                              group=group_id is not None)
        return self.show(full)

    @staticmethod
    def _check_member(s: Session, member_address: str) -> None:
        target = s.scalar(select(Mailbox).where(Mailbox.address == member_address))
        if target is None:
            raise NotFoundError(f"member {member_address} is neither a mailbox nor a distribution list (group)")
        if target.password_hash.startswith("!") and not target.password_hash.startswith("!directory"):
            raise ValidationError(f"{member_address} cannot log in (a shared mailbox or a resource): "
                                  "it cannot be a member")

    @staticmethod
    def _set_row(s: Session, model: type[SharedMailboxMember] | type[SharedMailboxGroup], key: tuple,
                 letters: str) -> None:
        row = s.get(SharedMailboxGroup, key) if model is SharedMailboxGroup else s.get(SharedMailboxMember, key)
        if row is not None:
            row.rights = letters
        elif model is SharedMailboxGroup:
            s.add(SharedMailboxGroup(shared_id=key[0], list_id=key[1], rights=letters))
        else:
            s.add(SharedMailboxMember(shared_id=key[0], member=key[1], rights=letters))

    def remove_member(self, address: str, member: str) -> dict:
        member_address = "@".join(validation.address(member))
        with self.app.dbs.session("data") as s:
            shared = self._get(s, address)
            group_id = s.scalar(select(DistributionList.id).where(DistributionList.address == member_address))
            row = s.get(SharedMailboxMember, (shared.id, member_address)) if group_id is None else \
                s.get(SharedMailboxGroup, (shared.id, group_id))
            if row is None:
                raise NotFoundError(f"{member_address} is not a member of {shared.address}")
            s.delete(row)
            full = self._write_acl(s, shared)
        if group_id is not None:
            accounts_changed(self.app)
        self.app.audit.record("shared_mailbox.member_remove", full, member=member_address)
        return self.show(full)

    def mailboxes_removed(self, session: Session, addresses: builtins.list[str]) -> None:
        """Mailboxes about to be removed (in `session`'s transaction) lose their rights in
        every shared mailbox's ACL file too: a mailbox created later under the same address
        must not inherit them."""
        shared_ids = set(session.scalars(select(SharedMailboxMember.shared_id)
                                         .where(SharedMailboxMember.member.in_(addresses))))
        for shared in session.scalars(select(SharedMailbox).where(SharedMailbox.id.in_(shared_ids))):
            session.execute(delete(SharedMailboxMember).where(SharedMailboxMember.shared_id == shared.id,
                                                              SharedMailboxMember.member.in_(addresses)))
            self._write_acl(session, shared)

    # ------------------------------------------------------------------ groups
    def lists_removed(self, session: Session, list_ids: builtins.list[int]) -> None:
        """Distribution lists about to be removed (in `session`'s transaction) leave every
        shared mailbox's ACL file: a list created later under the same address must not
        inherit their rights."""
        shared_ids = set(session.scalars(select(SharedMailboxGroup.shared_id)
                                         .where(SharedMailboxGroup.list_id.in_(list_ids))))
        for shared in session.scalars(select(SharedMailbox).where(SharedMailbox.id.in_(shared_ids))):
            session.execute(delete(SharedMailboxGroup).where(SharedMailboxGroup.shared_id == shared.id,
                                                             SharedMailboxGroup.list_id.in_(list_ids)))
            self._write_acl(session, shared)

    def groups_changed(self, list_ids: Iterable[int]) -> None:
        """The members of these lists changed (CLI, panel, the LDAP updater): if any list is a
        member of a shared mailbox, dovecot's cached userdb answers (acl_groups) are flushed on
        every node, so the next login gets the new rights. Nothing to rewrite: the ACL files
        name the group, not its members."""
        ids = builtins.list(set(list_ids))
        if not ids:
            return
        with self.app.dbs.session("data") as s:
            if s.scalar(select(SharedMailboxGroup.list_id).where(SharedMailboxGroup.list_id.in_(ids)).limit(1)) is None:
                return
        accounts_changed(self.app)

    # ------------------------------------------------------------------ dovecot's side
    def sync_acl(self, address: str) -> Path:
        """Rewrite the shared mailbox's ACL file from the database, and its quota limit where
        members' sessions read it (a repair: after a restore, or an upgrade)."""
        with self.app.dbs.session("data") as s:
            shared = self._get(s, address)
            self._write_acl(s, shared)
            full = shared.address
        self.write_quota_limit(full)
        return self._acl_dir(full) / ACL_FILE

    def _write_acl(self, session: Session, shared: SharedMailbox) -> str:
        """Write the ACL file from the rows `session` sees (its own pending changes included),
        whole and atomically, owned by the mail user; returns the shared mailbox's address."""
        session.flush()
        self._replace_file(self._acl_dir(shared.address),
                           render_acl(self._members(session, shared), self._groups(session, shared)))
        return shared.address

    def _acl_dir(self, full: str) -> Path:
        """Where dovecot itself says the shared mailbox's INBOX keeps its control files."""
        directory = Path(self._dovecot(["mailbox", "path", "-u", full, "-t", "control", "INBOX"]).strip())
        if not directory.is_absolute():
            raise SharedMailboxError(f"dovecot gave no storage path for {full}: {directory}")
        return directory

    def _replace_file(self, directory: Path, text: str) -> None:
        try:
            owner = pwd.getpwnam("vmail")
        except KeyError:
            raise SharedMailboxError("the mail user vmail does not exist (rupost deploy creates it)") from None
        self._make_dirs(directory, owner)
        fd, tmp = tempfile.mkstemp(prefix=".dovecot-acl.", dir=directory)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(text)
            os.chown(tmp, owner.pw_uid, owner.pw_gid)
            os.chmod(tmp, 0o600)
            os.replace(tmp, directory / ACL_FILE)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @staticmethod
    def _make_dirs(directory: Path, owner: pwd.struct_passwd) -> None:
        missing = []
        for parent in [directory, *directory.parents]:
            if parent.exists():
                break
            missing.append(parent)
        for path in reversed(missing):
            path.mkdir(mode=0o700)
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def _dovecot(self, args: builtins.list[str]) -> str:
        conf = self.app.layout.current / "dovecot" / "dovecot.conf"
        if not conf.exists():
            raise SharedMailboxError("no dovecot configuration deployed on this node (rupost deploy)")
        try:
            done = subprocess.run(["doveadm", "-c", str(conf), *args], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SharedMailboxError(f"doveadm {args[0]} failed: {exc}") from None
        if done.returncode != 0:
            raise SharedMailboxError(f"doveadm {' '.join(args)}: {done.stderr.strip() or done.returncode}")
        return done.stdout
