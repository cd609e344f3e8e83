#!/usr/bin/env python3
"""Uploads files to a store exactly as filuxe's client does, then checks every one.

The requests are filuxe's own: `Filuxe.upload` and `Filuxe.list` of filuxe_api.py and
`chunked_reader`/`get_file_time` of util.py (github.com/bjerrep/filuxe, commit
c22cd997c1b1aa088e30ce683423d7a824243621), with `requests` as filuxe uses it (a new
connection per request, `params={'time': epoch, 'force': force}` so the time is
Python's repr of the float and force is `True`/`False`, the `key` header, 1 MiB
chunks with `Content-Range: bytes FROM-TO/SIZE`, an empty body without a range for an
empty file). Only its logging and TLS certificate handling are left out.

usage: filuxe_upload.py SERVER KEY WORKDIR FILES BIG
  FILES files in all; BIG of them of 1-3 MiB (several chunks), 10 empty, the rest
  single-chunk files of 1 B-64 KiB. Every fourth file first exists with other bytes
  and is replaced with force=True, as `filuxe.py --upload --force` does.

Then each file is downloaded and compared, and the root listing filuxe's forwarder
asks for (`/filelist//?recursive=True`) must list each with the time sent, compared as
the forwarder does (`!=` on the floats). Prints one JSON line of figures; exits 1 when
anything was lost.
"""
import json
import os
import random
import sys
import time

import requests


# util.py
def chunked_reader(filename):
    with open(filename, 'rb') as f:
        while True:
            chunk = f.read(1024 * 1024)
            if not chunk:
                break
            yield chunk


# util.py
def get_file_time(pathname):
    return os.path.getmtime(pathname)


class Filuxe:
    """filuxe_api.Filuxe, its HTTP requests verbatim."""

    def __init__(self, server, write_key):
        self.server = server
        self.write_key = write_key
        self.certificate = False
        self.requests = 0

    def upload(self, filename, path, touch=False, force=False):
        if touch:
            epoch = time.time()
        else:
            epoch = get_file_time(filename)
        size = os.path.getsize(filename)
        response = None
        if not size:
            self.requests += 1
            response = requests.post(f'{self.server}/upload/{path}',
                                     headers={'key': self.write_key},
                                     data='',
                                     params={'time': epoch, 'force': force},
                                     verify=self.certificate)
        else:
            try:
                index = 0
                for chunk in chunked_reader(filename):
                    offset = index + len(chunk)
                    self.requests += 1
                    response = requests.post(f'{self.server}/upload/{path}',
                                             headers={'key': self.write_key,
                                                      'Content-Type': 'application/octet-stream',
                                                      'Content-length': str(size),
                                                      'Content-Range': f'bytes {index}-{offset - 1}/{size}'},
                                             data=chunk,
                                             params={'time': epoch, 'force': force},
                                             verify=self.certificate)
                    if response.status_code != 201:
                        break
                    index = offset
            except Exception as e:
                print(f'upload failed with {e}', file=sys.stderr)
        # filuxe's answer: OK only for 201.
        return (response is not None and response.status_code == 201), epoch, response

    def download(self, path):
        return requests.get(f'{self.server}/download/{path}', verify=self.certificate)

    def list(self, path, recursive=False):
        return requests.get(f'{self.server}/filelist/{path}',
                            headers={'key': self.write_key},
                            params={'recursive': recursive},
                            verify=self.certificate)


def main():
    server, key, work, files, big = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    rng = random.Random(19)
    client = Filuxe(server, key)
    src = os.path.join(work, 'src')
    os.makedirs(src, exist_ok=True)
    sent = {}
    figures = {'files': files, 'big': big, 'empty': 0, 'bytes': 0, 'forced_over_existing': 0,
               'upload_failed': 0, 'lost': 0, 'wrong_bytes': 0, 'unlisted': 0, 'time_differs': 0,
               'touch_times': 0, 'file_times': 0}
    started = time.time()
    for i in range(files):
        if i < big:
            size = rng.randint(1 << 20, 3 << 20)
        elif i < big + 10:
            size = 0
            figures['empty'] += 1
        else:
            size = rng.randint(1, 64 << 10)
        path = f'd{i % 7}/a:{i}.{i % 3}.{i % 5}:anytrack:anyarch:unknown.zip'
        filename = os.path.join(src, f'f{i}')
        data = rng.randbytes(size)
        force = i % 2 == 1
        if i % 4 == 3:
            # An older version is there; `--force` replaces it.
            with open(filename, 'wb') as f:
                f.write(rng.randbytes(rng.randint(1, 2 << 20)))
            ok, _, response = client.upload(filename, path, touch=True, force=False)
            if not ok:
                print(f'{path}: the old version got {response.status_code if response is not None else None}',
                      file=sys.stderr)
                figures['upload_failed'] += 1
                continue
            figures['forced_over_existing'] += 1
            force = True
        with open(filename, 'wb') as f:
            f.write(data)
        touch = i % 2 == 0
        figures['touch_times' if touch else 'file_times'] += 1
        ok, epoch, response = client.upload(filename, path, touch=touch, force=force)
        if not ok:
            print(f'{path}: {response.status_code if response is not None else None} '
                  f'{response.text if response is not None else ""}', file=sys.stderr)
            figures['upload_failed'] += 1
            continue
        figures['bytes'] += size
        sent[path] = (filename, epoch)
    figures['upload_seconds'] = round(time.time() - started, 1)
    figures['requests'] = client.requests

    for path, (filename, _) in sent.items():
        response = client.download(path)
        if response.status_code != 200:
            print(f'{path}: answered 201, download {response.status_code}', file=sys.stderr)
            figures['lost'] += 1
            continue
        with open(filename, 'rb') as f:
            if response.content != f.read():
                print(f'{path}: other bytes ({len(response.content)} B)', file=sys.stderr)
                figures['wrong_bytes'] += 1

    # fwd_util.get_http_filelist(filuxe_handle, path='/', recursive=True)
    response = client.list('/', recursive=True)
    if response.status_code != 200:
        print(f'/filelist//?recursive=True answered {response.status_code}: {response.text}', file=sys.stderr)
        figures['unlisted'] = len(sent)
    else:
        listing = response.json()['filelist']
        for path, (_, epoch) in sent.items():
            directory, name = os.path.split(path)
            metrics = listing.get(directory, {}).get(name)
            if metrics is None:
                figures['unlisted'] += 1
            # filuxe_forwarder_app.synchonize: `metrics['time'] != wan time`
            elif metrics['time'] != epoch:
                print(f'{path}: listed time {metrics["time"]!r}, sent {epoch!r}', file=sys.stderr)
                figures['time_differs'] += 1
    figures['seconds'] = round(time.time() - started, 1)
    print(json.dumps(figures))
    bad = figures['upload_failed'] + figures['lost'] + figures['wrong_bytes'] + figures['unlisted'] + figures['time_differs']
    sys.exit(1 if bad else 0)


if __name__ == '__main__':
    main()
