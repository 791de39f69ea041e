#!/usr/bin/env bash
# A scratch ext4 with the defaults of mkfs.ext4 (journaled), loop-mounted, for runs that create
# thousands of files. Usage (root): bash bench/scratch_ext4.sh [MOUNTPOINT] [SIZE]
#
# Why: on an ext4 without a journal (this VM's root filesystem), the kernel's inode allocator
# skips inodes deleted in the last 60 s (360 s while their inode table block is dirty) and pays a
# buffer lookup for each one it skips (perf: recently_deleted and find_get_block_common, 25-30% of
# all CPU samples of a 2,001-file download). A benchmark that removes one run's files before the
# next then measures the filesystem's history, not the client. On a default (journaled) ext4
# that check is off.
set -euo pipefail
MNT=${1:-/mnt/hubget-scratch}
SIZE=${2:-3G}
IMG=${IMG:-/var/tmp/hubget-scratch.img}
if mountpoint -q "$MNT"; then echo "$MNT is mounted already"; exit 0; fi
truncate -s "$SIZE" "$IMG"
mkfs.ext4 -q -F "$IMG"
mkdir -p "$MNT"
mount -o loop "$IMG" "$MNT"
df -hT "$MNT"
