from __future__ import annotations

import csv
import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from long_time_task.conf import conf


class Command(BaseCommand):
    help = "Create the demo login and sample input files (idempotent). Used by `make run`."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", default="demo-password")

    def handle(self, *args: Any, username: str, password: str, **options: Any) -> None:
        user_model = get_user_model()
        user, created = user_model._default_manager.get_or_create(
            **{user_model.USERNAME_FIELD: username}, defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_password(password)
            user.save()
        files = conf.FILES_DIR
        files.mkdir(parents=True, exist_ok=True)
        conf.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        sample_csv = files / "sample.csv"
        if not sample_csv.exists():
            with sample_csv.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(["city", "month", "rainfall_mm"])
                for i, city in enumerate(["Shanghai", "Beijing", "Shenzhen"]):
                    for month in range(1, 13):
                        writer.writerow([city, month, round(40 + 30 * i + 12 * month % 7, 1)])
        sample_json = files / "sample.json"
        if not sample_json.exists():
            sample_json.write_text(
                json.dumps([{"sku": f"A-{n:03d}", "qty": n * 3, "price": round(9.5 + n, 2)} for n in range(1, 21)]),
                encoding="utf-8",
            )
        state = "created" if created else "exists"
        self.stdout.write(f"Demo login ({state}): {username} / {password if created else '(unchanged)'}")
        self.stdout.write(f"Sample files in {files}: sample.csv, sample.json")
