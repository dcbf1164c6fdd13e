"""Who is simulated: people, their devices and identities, and (in B2B mode) their companies.

A *unit* is what one journey belongs to and what converts: a person in B2C mode, an account
(a company with several stakeholders) in B2B mode. People of one unit are always generated in
the same chunk, so a chunk holds whole journeys.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from touchline.simulate import text

DEVICE_COUNT_SHARES = (0.55, 0.28, 0.12, 0.05)  # people with 1, 2, 3, 4 devices
SKEWED_DEVICE_SHARE = 0.04  # devices whose clock is minutes to hours off
SKEW_MAX_MS = 6 * 3_600_000
SKEW_MIN_MS = 2 * 60_000

USER_AGENTS: tuple[str, ...] = (
    # desktop
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4.1 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80",
    # mobile
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.6367.82 Mobile Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1",
    # tablet
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.6367.82 Safari/537.36",
)
AGENTS_BY_KIND = ((0, 1, 2, 3, 4), (5, 6, 7), (8, 9))
DEVICE_KINDS = ("desktop", "mobile", "tablet")
DEVICE_KIND_SHARES = (0.45, 0.47, 0.08)
IOS_AGENTS = frozenset({2, 5, 7, 8})  # Apple devices: Google Ads sends gbraid/wbraid there

FIRST_NAMES = (
    "james", "mary", "john", "patricia", "robert", "jennifer", "michael", "linda", "william",
    "elizabeth", "david", "barbara", "richard", "susan", "joseph", "jessica", "thomas", "sarah",
    "charles", "karen", "wei", "priya", "mohammed", "fatima", "carlos", "lucia", "hiroshi",
    "yuki", "olga", "ivan", "amara", "kwame", "sofia", "mateo", "emma", "noah", "ava", "liam",
    "chloe", "lucas",
)
LAST_NAMES = (
    "smith", "johnson", "williams", "brown", "jones", "garcia", "miller", "davis", "rodriguez",
    "martinez", "hernandez", "lopez", "gonzalez", "wilson", "anderson", "thomas", "taylor",
    "moore", "jackson", "martin", "lee", "perez", "thompson", "white", "harris", "sanchez",
    "clark", "ramirez", "lewis", "robinson", "walker", "young", "allen", "king", "wright",
    "scott", "torres", "nguyen", "hill", "flores", "green", "adams", "nelson", "baker", "hall",
    "rivera", "campbell", "mitchell", "carter", "roberts",
)
MAIL_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "icloud.com", "hotmail.com")
MAIL_DOMAIN_SHARES = (0.55, 0.12, 0.12, 0.12, 0.09)
COMPANY_PREFIXES = (
    "Northwind", "Blue Harbor", "Redwood", "Silverline", "Acorn", "Brightpath", "Cobalt",
    "Evergreen", "Foxglove", "Granite", "Helix", "Ironbridge", "Juniper", "Keystone", "Lumen",
    "Maple Leaf", "Nimbus", "Orchard", "Pinnacle", "Quartz", "Riverstone", "Summit", "Tidewater",
    "Umber", "Vantage", "Westfield", "Yellowtail", "Zephyr",
)
COMPANY_SUFFIXES = (
    "Robotics", "Logistics", "Labs", "Health", "Analytics", "Foods", "Energy", "Software",
    "Capital", "Retail", "Media", "Systems", "Biotech", "Freight", "Studios", "Insurance",
)
INDUSTRIES = (
    "software", "manufacturing", "healthcare", "retail", "financial services", "logistics",
    "media", "energy", "education", "hospitality",
)


@dataclass(frozen=True)
class Population:
    """The people of one chunk, grouped in units, with their devices and identities.

    Arrays indexed by chunk-local person (``person_*``), device (``device_*``) or unit
    (``unit_*``); string columns are Arrow arrays.
    """

    b2b: bool
    person_global: np.ndarray
    person_unit: np.ndarray
    person_rank: np.ndarray  # position of the person within the unit (0 = main contact)
    unit_global: np.ndarray
    unit_offsets: np.ndarray  # people of unit u are unit_offsets[u]:unit_offsets[u + 1]
    device_person: np.ndarray
    device_offsets: np.ndarray  # devices of person p are device_offsets[p]:device_offsets[p+1]
    device_kind: np.ndarray
    device_agent: np.ndarray
    device_skew_ms: np.ndarray
    anonymous_id: pa.Array
    ip: pa.Array
    user_id: pa.Array
    crm_contact_id: pa.Array  # the CRM's own id of the person (HubSpot-like), not the user id
    email: pa.Array
    first_name: pa.Array
    last_name: pa.Array
    phone_digits: pa.Array  # ten national digits, formatted differently by each source
    company: pa.Array  # account name per person (null in B2C)
    unit_account_id: pa.Array  # per unit (null in B2C)
    unit_account_name: pa.Array
    unit_domain: pa.Array
    unit_industry: pa.Array
    unit_employees: np.ndarray

    @property
    def people(self) -> int:
        return len(self.person_global)

    @property
    def units(self) -> int:
        return len(self.unit_global)

    @property
    def devices(self) -> int:
        return len(self.device_person)


def account_sizes(people: int, accounts: int, rng: np.random.Generator) -> np.ndarray:
    """Stakeholders per account: at least one each, the rest spread with a skew (a few large
    buying committees, many small ones)."""
    weights = rng.lognormal(0.0, 0.6, size=accounts)
    extra = rng.multinomial(people - accounts, weights / weights.sum())
    return (1 + extra).astype(np.int64)


def build_population(
    rng: np.random.Generator,
    *,
    first_person: int,
    unit_global: np.ndarray,
    unit_sizes: np.ndarray,
    b2b: bool,
) -> Population:
    """Draw the people of the units ``unit_global`` (sizes ``unit_sizes``), starting at the
    global person index ``first_person``."""
    n_units = len(unit_global)
    unit_offsets = np.concatenate([[0], np.cumsum(unit_sizes)]).astype(np.int64)
    n_people = int(unit_offsets[-1])
    person_global = first_person + np.arange(n_people, dtype=np.int64)
    person_unit = np.repeat(np.arange(n_units), unit_sizes)
    person_rank = np.arange(n_people) - unit_offsets[person_unit]

    n_devices = 1 + rng.choice(4, size=n_people, p=DEVICE_COUNT_SHARES)
    device_offsets = np.concatenate([[0], np.cumsum(n_devices)]).astype(np.int64)
    total_devices = int(device_offsets[-1])
    device_person = np.repeat(np.arange(n_people), n_devices)
    device_kind = rng.choice(3, size=total_devices, p=DEVICE_KIND_SHARES)
    agent_pick = rng.random(total_devices)
    device_agent = np.empty(total_devices, np.int64)
    for kind, agents in enumerate(AGENTS_BY_KIND):
        mine = device_kind == kind
        device_agent[mine] = np.asarray(agents)[(agent_pick[mine] * len(agents)).astype(int)]
    skewed = rng.random(total_devices) < SKEWED_DEVICE_SHARE
    skew = rng.integers(SKEW_MIN_MS, SKEW_MAX_MS, size=total_devices) * rng.choice([-1, 1],
                                                                                    total_devices)
    device_skew_ms = np.where(skewed, skew, 0).astype(np.int64)
    anonymous_id = text.uuids(rng, total_devices)
    octets = rng.integers(1, 255, size=(total_devices, 4))
    ip = text.concat(*[_ints(octets[:, k]) if k == 3 else text.concat(_ints(octets[:, k]), ".")
                       for k in range(4)])

    # B2B people get their own id space, so a B2C and a B2B data set can share a warehouse
    user_id = text.scrambled_hex(person_global, 12, "usb_" if b2b else "usr_")
    crm_contact_id = text.scrambled_hex(person_global, 10, "hsb_" if b2b else "hs_")
    first_idx = rng.integers(0, len(FIRST_NAMES), n_people)
    first_name = text.take(FIRST_NAMES, first_idx)
    if b2b:
        offset = rng.integers(0, len(LAST_NAMES), n_units)[person_unit]
        last_idx = (offset + person_rank) % len(LAST_NAMES)
        last_name = text.take(LAST_NAMES, last_idx)
        account_ids = unit_global
        prefix = account_ids % len(COMPANY_PREFIXES)
        suffix = (account_ids // len(COMPANY_PREFIXES)) % len(COMPANY_SUFFIXES)
        series = account_ids // (len(COMPANY_PREFIXES) * len(COMPANY_SUFFIXES))
        series_text = text.where(series > 0, text.concat(" ", _ints(series + 1)), "")
        unit_account_name = text.concat(text.take(COMPANY_PREFIXES, prefix), " ",
                                        text.take(COMPANY_SUFFIXES, suffix), series_text)
        slug = pc.replace_substring(pc.utf8_lower(text.concat(
            text.take(COMPANY_PREFIXES, prefix), "-", text.take(COMPANY_SUFFIXES, suffix))),
            " ", "")
        unit_domain = text.concat(slug, text.where(series > 0, _ints(series + 1), ""), ".com")
        unit_account_id = text.scrambled_hex(unit_global, 10, "acc_")
        unit_industry = text.take(INDUSTRIES, rng.integers(0, len(INDUSTRIES), n_units))
        unit_employees = np.round(rng.lognormal(5.0, 1.3, n_units)).astype(np.int64) + 5
        # stakeholders beyond the surname list get a number so work e-mails stay unique
        clash = person_rank // len(LAST_NAMES)
        local = text.concat(first_name, ".", last_name,
                            text.where(clash > 0, _ints(clash), ""))
        email = text.concat(local, "@", unit_domain.take(pa.array(person_unit)))
        company = unit_account_name.take(pa.array(person_unit))
    else:
        last_name = text.take(LAST_NAMES, rng.integers(0, len(LAST_NAMES), n_people))
        pattern = rng.choice(3, size=n_people, p=(0.5, 0.3, 0.2))
        initial = pc.utf8_slice_codeunits(first_name, 0, 1)
        local = text.where(pattern == 0, text.concat(first_name, ".", last_name),
                           text.where(pattern == 1, text.concat(initial, last_name), first_name))
        # the global person number keeps every e-mail unique (two people never share one)
        domain = text.take(MAIL_DOMAINS, rng.choice(len(MAIL_DOMAINS), n_people,
                                                    p=MAIL_DOMAIN_SHARES))
        email = text.concat(local, _ints(person_global), "@", domain)
        nulls = pa.nulls(n_units, pa.string())
        unit_account_id = unit_account_name = unit_domain = unit_industry = nulls
        unit_employees = np.zeros(n_units, np.int64)
        company = pa.nulls(n_people, pa.string())
    # a bijection of the person number; B2B numbers are shifted so that B2C and B2B people
    # of two data sets in one warehouse never share a phone
    shift = 4_000_000_000 if b2b else 0
    national = 2_000_000_000 + (person_global * 2_654_435_761 + 12_345 + shift) % 8_000_000_000
    phone_digits = text.digits(national, 10)
    return Population(
        b2b=b2b, person_global=person_global, person_unit=person_unit, person_rank=person_rank,
        unit_global=np.asarray(unit_global), unit_offsets=unit_offsets,
        device_person=device_person, device_offsets=device_offsets, device_kind=device_kind,
        device_agent=device_agent, device_skew_ms=device_skew_ms, anonymous_id=anonymous_id,
        ip=ip, user_id=user_id, crm_contact_id=crm_contact_id, email=email,
        first_name=first_name, last_name=last_name,
        phone_digits=phone_digits, company=company, unit_account_id=unit_account_id,
        unit_account_name=unit_account_name, unit_domain=unit_domain,
        unit_industry=unit_industry, unit_employees=unit_employees,
    )


def _ints(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(np.asarray(values, np.int64)), pa.string())
