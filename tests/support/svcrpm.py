"""tp-svc: an RPM whose %pre creates the user that owns its files, built here with rpmbuild.

The synthetic set (rpmdata.synthetic_rpms) has no such package; the owner
tests and the RPM boot test build it beside it. `accounts_tarball()` is a
supermin.d tarball with the appliance's own /etc/passwd and /etc/group.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

SVC_SPEC = """\
Name:           tp-svc
Version:        1.0
Release:        1
Summary:        A service whose %pre creates its user, which owns its files
License:        MIT
BuildArch:      noarch
Requires(pre):  tp-setup
Requires(pre):  tp-shell

%description
Like a package calling useradd in %pre, with the shell alone.

%install
mkdir -p %{buildroot}/var/lib/tp-svc %{buildroot}/usr/libexec/tp-svc
echo data > %{buildroot}/var/lib/tp-svc/data
echo known > %{buildroot}/var/lib/tp-svc/known
printf '#!/bin/sh\\necho helper\\n' > %{buildroot}/usr/libexec/tp-svc/helper

%pre
grep -q '^tp-svc:' /etc/passwd || echo 'tp-svc:x:990:990::/:/bin/sh' >> /etc/passwd
grep -q '^tp-svc:' /etc/group || echo 'tp-svc:x:990:' >> /etc/group

%files
%dir %attr(0750,tp-svc,tp-svc) /var/lib/tp-svc
%attr(0640,tp-svc,tp-svc) /var/lib/tp-svc/data
%attr(0640,daemon,tp-staff) /var/lib/tp-svc/known
%attr(4750,tp-svc,root) /usr/libexec/tp-svc/helper
"""
# The appliance's own accounts (a supermin.d tarball, as a user brings them):
# daemon is not Fedora's static 2 here, and tp-staff exists only in this file.
PASSWD = b"root:x:0:0:root:/root:/bin/sh\ndaemon:x:7:7:daemon:/sbin:/sbin/nologin\n"
GROUP = b"root:x:0:\ndaemon:x:7:\ntp-staff:x:4321:\n"


def accounts_tarball() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in (("etc/passwd", PASSWD), ("etc/group", GROUP)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def build_svc_rpm(directory: Path) -> Path:
    """rpmbuild the tp-svc package into `directory`; its path."""
    top = directory / "rpmbuild"
    (top / "SPECS").mkdir(parents=True)
    spec = top / "SPECS/tp-svc.spec"
    spec.write_text(SVC_SPEC)
    subprocess.run(
        ["rpmbuild", "--quiet", "--define", f"_topdir {top}", "-bb", str(spec)],
        env={**os.environ, "LC_ALL": "C", "SOURCE_DATE_EPOCH": "1700000000"},
        capture_output=True,
        check=True,
        timeout=300,
    )
    (built,) = (top / "RPMS/noarch").glob("tp-svc-*.rpm")
    rpm = directory / "repo" / built.name
    rpm.parent.mkdir()
    shutil.copyfile(built, rpm)
    rpm.chmod(0o644)
    rpm.parent.chmod(0o755)
    return rpm
