# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""playbooks/report.yml on a fake fleet: content of the Markdown, HTML and JSON files, and the
HTML opened in headless Chromium (screenshot saved under artifacts/)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import ARTIFACTS
from fleet import make_fleet

CHROMIUM = os.environ.get('CHROMIUM', '/usr/bin/chromium')


@pytest.fixture
def report(tmp_path, run_playbook):
    inventory = make_fleet(tmp_path / 'fleet')
    out = tmp_path / 'report'
    proc = run_playbook('playbooks/report.yml', inventory,
                        {'report_dir': str(out), 'report_title': 'Test fleet'})
    files = dict((ext, (out / ('fleet-report.' + ext)).read_text(encoding='utf-8')) for ext in ('md', 'html', 'json'))
    return proc, out, files


def test_playbook_succeeds_despite_an_unreachable_host(report):
    proc, dummy, dummy2 = report
    assert 'hv4-down' in proc.stdout
    assert '2/4 hosts ready, 3 devices on VFIO drivers, 1 non-viable groups, 1 ambiguous variants' in proc.stdout


def test_json_summary(report):
    data = json.loads(report[2]['json'])
    s = data['summary']
    assert (s['hosts'], s['hosts_ready'], s['devices_bound']) == (4, 2, 3)
    assert s['hosts_without_facts'] == ['hv4-down']
    assert s['nonviable_groups'] == [{'host': 'hv1', 'group': '20', 'members': ['0000:01:00.0', '0000:01:00.1'],
                                      'blockers': ['0000:01:00.1 on snd_hda_intel']}]
    assert [(a['host'], a['address']) for a in s['ambiguous']] == [('hv2', '0000:41:00.2')]
    hosts = dict((h['name'], h) for h in data['hosts'])
    assert [h['name'] for h in data['hosts']] == ['hv1', 'hv2', 'hv3', 'hv4-down']
    # Bridges are left out of the device tables.
    assert '0000:00:01.0' not in [d['address'] for d in hosts['hv1']['devices']]
    virtio = [d for d in hosts['hv1']['devices'] if d['address'] == '0000:00:03.0'][0]
    assert virtio['vfio_module'] == 'virtio_vfio_pci'
    assert virtio['candidates'] == ['virtio_vfio_pci (5 *)', 'vfio_pci (7 *)']
    assert hosts['hv3']['iommu_enabled'] is False and hosts['hv3']['ready'] is False
    # Boot loader and installed kernels (issue 14): hv1 boots through Debian's GRUB, hv3 through
    # a GRUB the role cannot configure (no update-grub, no grubby).
    assert (hosts['hv1']['boot_loader'], hosts['hv1']['boot_method']) == ('grub', 'grub_dropin')
    assert (hosts['hv3']['boot_loader'], hosts['hv3']['boot_method']) == ('grub', None)
    assert hosts['hv1']['kernels'] == [{'release': '6.12.48+deb12-amd64', 'running': True, 'initramfs': None,
                                        'missing_vfio_modules': [], 'initramfs_vfio_modules': None}]
    resets = dict((d['address'], d['reset']) for d in hosts['hv2']['devices'])
    assert resets == {'0000:41:00.2': 'flr', '0000:42:00.0': 'none'}


def test_markdown_content(report):
    md = report[2]['md']
    assert md.startswith('# Test fleet\n')
    assert '| Hosts ready for passthrough | 2 / 4 |' in md
    assert '| Devices on VFIO drivers | 3 / 10 |' in md
    assert '| hv1 | 20 | 0000:01:00.0, 0000:01:00.1 | 0000:01:00.1 on snd_hda_intel |' in md
    assert '| hv2 | 0000:41:00.2 | 15b3:101e | mlx5_vfio_pci (5 *), acme_vfio_pci (5 *), vfio_pci (7 *) |' in md
    for host in ('hv1', 'hv2', 'hv3', 'hv4-down'):
        assert '\n## %s\n' % host in md
    assert ('| 0000:00:03.0 (enp0s3) | 1af4:1041 | 020000 | virtio-pci | virtio_vfio_pci | '
            'virtio_vfio_pci (5 *), vfio_pci (7 *) | 2 | no | — |') in md
    assert '| 0000:00:02.0 | 8086:10d3 | 020000 | **vfio-pci** | vfio_pci |' in md
    assert 'PF 2/64 VFs, autoprobe off' in md and 'VF of 0000:3b:00.0' in md
    assert 'IOMMU **off** (0 groups)' in md
    assert '**No facts**' in md
    assert '- Boot loader: `grub`; IOMMU arguments set by `grub_dropin`' in md
    assert "set by nothing the role manages (GRUB without update-grub or grubby" in md
    assert '- Installed kernels: `6.12.48+deb12-amd64` (running)\n' in md
    # Every table row has as many cells as its header.
    for table in re.findall(r'(?:^\|.*\|\n)+', md, re.M):
        rows = table.strip().split('\n')
        widths = set(len(re.split(r'(?<!\\)\|', r)) for r in rows)
        assert len(widths) == 1, table


def test_html_is_self_contained_and_complete(report):
    html = report[2]['html']
    assert html.startswith('<!DOCTYPE html>')
    for external in ('http://', 'https://', '<script', '<link', '<img', '@import', 'url('):
        assert external not in html
    assert '<title>Test fleet</title>' in html
    for text in ('hosts ready for passthrough', 'non-viable IOMMU groups', 'ambiguous VFIO variants',
                 '0000:01:00.1 on snd_hda_intel', 'virtio_vfio_pci (5 *), vfio_pci (7 *)',
                 'PF 2/64 VFs, autoprobe off', 'hv4-down'):
        assert text in html
    assert html.count('<table>') == 2 + 3
    assert html.count('<tr>') == html.count('</tr>')


def test_html_renders_in_headless_chromium(report, tmp_path):
    if not os.path.exists(CHROMIUM):
        if os.environ.get('CI'):
            pytest.fail('%s is missing: install the Debian package chromium (hack/apt-deps)' % CHROMIUM)
        pytest.skip('%s is missing (Debian package chromium)' % CHROMIUM)
    html_path = report[1] / 'fleet-report.html'
    if not os.path.isdir(ARTIFACTS):
        os.makedirs(ARTIFACTS)
    shot = os.path.join(ARTIFACTS, 'report.png')
    if os.path.exists(shot):
        os.unlink(shot)
    argv = [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
            '--disable-background-networking', '--disable-component-update', '--disable-sync',
            '--user-data-dir=%s' % (tmp_path / 'chromium-profile'), '--window-size=1400,1800',
            '--screenshot=%s' % shot, 'file://%s' % html_path]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=120, env=dict(os.environ, HOME=str(tmp_path)), check=False)
    assert proc.returncode == 0, proc.stdout
    assert os.path.getsize(shot) > 20000, proc.stdout
    with open(shot, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    # Keep the page next to its screenshot for whoever looks at the artifacts.
    shutil.copy(str(html_path), os.path.join(ARTIFACTS, 'fleet-report.html'))


def test_report_lands_in_the_working_directory_by_default(tmp_path, run_playbook):
    """Run by its FQCN without report_dir: the files land where ansible-playbook runs (the
    fixture runs it in tmp_path), never inside the collection."""
    inventory = make_fleet(tmp_path / 'fleet')
    proc = run_playbook('hypervisor.vfio.report', inventory)
    for ext in ('md', 'html', 'json'):
        assert (tmp_path / ('fleet-report.' + ext)).is_file()
    assert '%s/fleet-report.html' % tmp_path in proc.stdout


def test_relative_report_dir_is_taken_from_the_working_directory(tmp_path, run_playbook):
    inventory = make_fleet(tmp_path / 'fleet')
    run_playbook('playbooks/report.yml', inventory, {'report_dir': 'out/fleet'})
    assert (tmp_path / 'out' / 'fleet' / 'fleet-report.json').is_file()
