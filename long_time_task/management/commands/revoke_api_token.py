from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from long_time_task.models import ApiToken, hash_token


class Command(BaseCommand):
    help = "Revoke an API token, given the token itself or its prefix (as shown in the admin)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("token", help="the token, or its 12-character prefix")

    def handle(self, *args: Any, token: str, **options: Any) -> None:
        rows = ApiToken.objects.filter(revoked_at__isnull=True)
        match = rows.filter(key_hash=hash_token(token)) if len(token) > 12 else rows.filter(key_prefix=token)
        count = match.update(revoked_at=timezone.now())
        if not count:
            raise CommandError("No active token matches")
        self.stdout.write(f"Revoked {count} token(s).")
