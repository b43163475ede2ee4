#!/usr/bin/env python3
"""benches/rpm-index.py — grows an rpm-md repository made by createrepo_c to N packages.

Usage: rpm-index.py REPO_DIR TOTAL [SEED]

Reads REPO_DIR/repodata/repomd.xml and the primary it lists, adds generated packages
until primary holds TOTAL, writes the new primary (gzip) and rewrites repomd.xml's
primary entry (checksum, open-checksum, sizes, location). The packages createrepo_c
listed (the real ones) are kept as they are; the generated ones are never downloaded,
so their archives do not exist.

The generated packages look like a distribution's: an EVR, `name = EVR` and
`name(x86-64)` provides, a third provide a library soname (`libgNNN.so.K()(64bit)`),
some ship a command under /usr/bin (listed in primary, as createrepo_c lists *bin/
files), and each requires about six things: sonames and names of packages generated
before it (versioned now and then), `/bin/sh` or `/usr/bin/gNNN` files, and the real
packages' names. A few obsolete, conflict or recommend. Deterministic for a SEED.
"""
import gzip
import hashlib
import os
import random
import re
import sys
import time
from xml.sax.saxutils import escape

REPO = "http://linux.duke.edu/metadata/repo"


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__.strip().splitlines()[2])
    repo, total = sys.argv[1], int(sys.argv[2])
    rng = random.Random(int(sys.argv[3]) if len(sys.argv) == 4 else 1)
    repomd_path = os.path.join(repo, "repodata", "repomd.xml")
    repomd = open(repomd_path, encoding="utf-8").read()
    entry = re.search(r'<data type="primary">.*?</data>', repomd, re.S)
    if not entry:
        sys.exit(f"{repomd_path}: lists no primary")
    href = re.search(r'<location href="([^"]+)"', entry.group(0)).group(1)
    with gzip.open(os.path.join(repo, href), "rt", encoding="utf-8") as f:
        primary = f.read()
    real = int(re.search(r'packages="(\d+)"', primary).group(1))
    real_names = re.findall(r"<name>([^<]+)</name>", primary)
    if total < real:
        sys.exit(f"{total} packages asked for, primary already holds {real}")

    out = []
    libs, names, commands, modules = [], [], [], []
    words = "the a of to files library tool for and with support data runtime command".split()
    for i in range(total - real):
        name = f"g{i:05d}"
        arch = "noarch" if rng.random() < 0.2 else "x86_64"
        ver = f"{rng.randint(0, 30)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}"
        rel = f"{rng.randint(1, 9)}.fc41"
        epoch = rng.choice([0] * 9 + [1, 2])
        evr = f'epoch="{epoch}" ver="{ver}" rel="{rel}"'
        provides = [f'<rpm:entry name="{name}" flags="EQ" {evr}/>']
        if arch != "noarch":
            provides.append(f'<rpm:entry name="{name}(x86-64)" flags="EQ" {evr}/>')
        if arch != "noarch" and rng.random() < 0.33:
            soname = f"lib{name}.so.{rng.randint(0, 5)}()(64bit)"
            provides.append(f'<rpm:entry name="{escape(soname)}"/>')
        files = []
        if rng.random() < 0.4:
            files.append(f"/usr/bin/{name}")
        if rng.random() < 0.3:
            provides.append(f'<rpm:entry name="config({name})" flags="EQ" {evr}/>')
            files += [f"/etc/{name}", f"/etc/{name}/{name}.conf"]
        if rng.random() < 0.1:  # a language package: many module provides
            provides += [f'<rpm:entry name="perl({name.upper()}::M{k})"/>' for k in range(20)]
            modules.append(f"perl({name.upper()}::M{rng.randint(0, 19)})")
        requires = []
        if modules and rng.random() < 0.1:
            requires += [f'<rpm:entry name="{rng.choice(modules)}"/>' for _ in range(4)]
        for _ in range(rng.randint(0, 20)):
            roll = rng.random()
            if roll < 0.45 and libs:
                requires.append(f'<rpm:entry name="{escape(rng.choice(libs))}"/>')
            elif roll < 0.75 and names:
                other, other_ver = rng.choice(names)
                if rng.random() < 0.3:
                    requires.append(
                        f'<rpm:entry name="{other}" flags="GE" epoch="0" ver="{other_ver}"/>'
                    )
                else:
                    requires.append(f'<rpm:entry name="{other}"/>')
            elif roll < 0.85 and commands:
                requires.append(f'<rpm:entry name="{rng.choice(commands)}"/>')
            elif roll < 0.93:
                requires.append('<rpm:entry name="/bin/sh" pre="1"/>')
            else:
                requires.append(f'<rpm:entry name="{escape(rng.choice(real_names))}"/>')
        extra = ""
        if i and rng.random() < 0.02:
            extra += f'<rpm:obsoletes><rpm:entry name="{name}-old" flags="LT" epoch="0" ver="{ver}"/></rpm:obsoletes>'
        if i and rng.random() < 0.01:
            extra += f'<rpm:conflicts><rpm:entry name="{rng.choice(names)[0]}" flags="LT" epoch="0" ver="0.1"/></rpm:conflicts>'
        if names and rng.random() < 0.05:
            extra += f'<rpm:recommends><rpm:entry name="{rng.choice(names)[0]}"/></rpm:recommends>'
        pkgid = hashlib.sha256(name.encode()).hexdigest()
        size = rng.randint(5_000, 5_000_000)
        out.append(
            f'<package type="rpm"><name>{name}</name><arch>{arch}</arch>'
            f'<version {evr}/><checksum type="sha256" pkgid="YES">{pkgid}</checksum>'
            f"<summary>generated package {name}</summary>"
            f"<description>{' '.join(rng.choice(words) for _ in range(rng.randint(10, 90)))}</description>"
            f"<packager/><url/><time file=\"1700000000\" build=\"1700000000\"/>"
            f'<size package="{size}" installed="{size * 3}" archive="{size * 3}"/>'
            f'<location href="Packages/{name[:2]}/{name}-{ver}-{rel}.{arch}.rpm"/>'
            f"<format><rpm:license>MIT</rpm:license><rpm:vendor/><rpm:group>Unspecified</rpm:group>"
            f"<rpm:buildhost>bench</rpm:buildhost><rpm:sourcerpm>{name}-{ver}-{rel}.src.rpm</rpm:sourcerpm>"
            f'<rpm:header-range start="4504" end="{4504 + rng.randint(2_000, 90_000)}"/>'
            f"<rpm:provides>{''.join(provides)}</rpm:provides>"
            + (f"<rpm:requires>{''.join(requires)}</rpm:requires>" if requires else "")
            + extra
            + "".join(f"<file>{f}</file>" for f in files)
            + "</format></package>\n"
        )
        names.append((name, ver))
        libs.extend(p.split('"')[1] for p in provides[2:3] if ".so." in p)
        commands.extend(files)

    head, sep, tail = primary.rpartition("</metadata>")
    if not sep:
        sys.exit(f"{href}: no </metadata>")
    primary = re.sub(r'packages="\d+"', f'packages="{total}"', head, count=1) + "".join(out) + sep + tail
    raw = primary.encode("utf-8")
    packed = gzip.compress(raw, compresslevel=6, mtime=0)
    new_href = f"repodata/{hashlib.sha256(packed).hexdigest()}-primary.xml.gz"
    with open(os.path.join(repo, new_href), "wb") as f:
        f.write(packed)
    if new_href != href:
        os.unlink(os.path.join(repo, href))
    data = (
        '<data type="primary">\n'
        f'    <checksum type="sha256">{hashlib.sha256(packed).hexdigest()}</checksum>\n'
        f'    <open-checksum type="sha256">{hashlib.sha256(raw).hexdigest()}</open-checksum>\n'
        f'    <location href="{new_href}"/>\n'
        f"    <timestamp>{int(time.time())}</timestamp>\n"
        f"    <size>{len(packed)}</size>\n"
        f"    <open-size>{len(raw)}</open-size>\n"
        "  </data>"
    )
    with open(repomd_path + ".tmp", "w", encoding="utf-8") as f:
        f.write(repomd[: entry.start()] + data + repomd[entry.end():])
    os.replace(repomd_path + ".tmp", repomd_path)
    print(f"{total} packages ({real} real, {total - real} generated), primary {len(raw)} bytes")


if __name__ == "__main__":
    main()
