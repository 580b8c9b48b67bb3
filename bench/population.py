"""A synthetic population of children with known truth, and the records organisations hold of them.

    people = generate(5000, seed=7, mix="default")           # the truth: one Person per child
    per_org = views(people, org_count=3, seed=7, overlap=0.8, mix="default")
    for record in per_org["LA"]: record.person_id, record.update, record.corruptions
    write_jsonl([r.update for r in per_org["LA"]], "la.jsonl")   # ChildUpdate.record() per line

Everything is drawn from ``random.Random`` seeded by the caller: the same seed, size, mix and
reference date give the same population, byte for byte.

What it models (and where the numbers come from; none is tuned to a matcher):

- Families: siblings share family name, address and postcode; children are spaced 10 months to
  6 years apart; about 1.6 % of maternities are twins (ONS, Births in England and Wales: around 15
  multiple maternities per 1,000), two thirds of twin pairs same sex, and some twins get alliterative
  names (the hard case for a matcher: same family, birth date and address, different given names).
- Names: ranked lists of real names per origin group, weighted by a power law of the rank
  (share(rank) proportional to rank**-s). The exponents are chosen so that the first ranks have about
  the shares published for England and Wales (Smith about 1.3 % of people, the tenth surname about
  0.4 %; the top baby names about 1 % to 1.5 % of births before the tail is folded in). Family names
  get a long tail of rare English toponymic surnames (prefix + suffix: Ashworth, Blackwood, ...),
  which hold what the ranked list does not cover. Given names have no generated tail, so they are
  MORE concentrated than real ones (a harder test, not an easier one).
- Origin groups: approximate shares of England and Wales (Census 2021 ethnic groups, rounded):
  British and Irish, South Asian, Black African, Polish and other European, Arab and Somali,
  Chinese; Polish family names take their feminine form for girls (Kowalski / Kowalska).
- Hyphenated double-barrelled family names (about 2 % of families), hyphenated given names
  (Lily-Mae), apostrophes (O'Brien, D'Souza), diacritics (Zoë, Chloé, Łukasz, Siobhán).
- UK-shaped addresses: house number + street, some flats; postcodes of the real shape (outward code
  of a real postcode area + district, inward code digit + two letters from the allowed alphabet).
- NHS numbers (modulus 11, England's 4xx and 6xx ranges) for most children, and unique pupil numbers
  (check letter, a real local-authority number) for most school-age children (4 and over), unique
  by construction.

Corruption model, per record an organisation holds (``Mix``): each corruption is applied
independently with its rate, where it can apply (a day/month swap only when both are 12 or less and
differ; a nickname only when the name has one), and the record lists the corruptions it carries.
The default rates are plausible orders of magnitude for administrative records, not measurements;
the "harsh" mix roughly doubles or triples them so that no result hinges on them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple

from stdnum.gb import upn as stdnum_upn

from gateway.index.model import Address, Carer, ChildUpdate, Identity, Involvement, Setting

# ---- names --------------------------------------------------------------------------------------

# Ranked (most common first). British/Irish family names: the commonest surnames of England and
# Wales in rank order (ONS / public surname lists); the South Asian names in that list are in their
# own group below.
_BRITISH_FAMILY = """
Smith Jones Williams Taylor Brown Davies Evans Wilson Thomas Johnson Roberts Robinson Thompson Wright
Walker White Edwards Hughes Green Hall Lewis Harris Clarke Jackson Wood Turner Martin Cooper Hill Ward
Morris Moore Clark Lee King Baker Harrison Morgan Allen James Scott Phillips Watson Davis Parker Price
Bennett Young Griffiths Mitchell Kelly Cook Carter Richardson Bailey Collins Bell Shaw Murphy Miller Cox
Richards Marshall Anderson Simpson Ellis Adams Wilkinson Foster Chapman Powell Webb Rogers Gray Mason
Hunt Campbell Matthews Owen Palmer Holmes Mills Barnes Knight Lloyd Butler Russell Barker Fisher Stevens
Jenkins Murray Dixon Harvey Graham Pearson Fletcher Walsh Gibson Howard Andrews Stewart Elliott Reynolds
Saunders Payne Fox Ford Pearce Day Brooks West Lawrence Cole Atkinson Bradley Spencer Gill Dawson Ball
Burton O'Brien Watts Rose Booth Perry Ryan Grant Wells Armstrong Francis Rees Hayes Hart Hudson Newman
Barrett Webster Hunter Gregory Carr Lowe Page Marsh Riley Dunn Woods Parsons Berry Stone Reid Holland
Hawkins Harding Porter Robertson Newton Oliver Reed Kennedy Williamson Bird Gardner Dean Lane Cooke Bates
Henderson Parry Burgess Bishop Walton Burns Nicholson Shepherd Ross Cross Long Freeman Warren Nicholls
Hamilton Byrne Sutton McDonald Yates Hodgson Robson Curtis Hopkins O'Connor Harper Coleman Watkins Moss
McCarthy Chambers O'Neill Griffin Sharp Hardy Wheeler Potter Osborne Johnston Gordon Doyle Wallace George
Jordan Hutchinson Rowe Burke May Pritchard Gilbert Willis Higgins Read Miles Stevenson Stephenson
Hammond Arnold Buckley Walters Hewitt Barber Nelson Slater Austin Sullivan Whitehead Mann Frost Lambert
Stephens Blake Lynch Goodwin Barton Woodward Thomson Cunningham Quinn Barnett Baxter Clayton Nash
Greenwood Jennings Holt Kemp Poole Gallagher Bond Stokes Tucker Davidson Fowler Heath Norman Middleton
Lawson Banks French Stanley Jarvis Gibbs Ferguson Hayward Carroll Douglas Dickinson Todd Barlow Peters
Lucas Knowles Hartley Morton Alexander Field Morrison Norris Townsend Preston Hancock Thornton Baldwin
Burrows Briggs Storey Pope MacLeod McKenzie O'Sullivan O'Reilly McLaughlin O'Donnell MacDonald Llewellyn
ap Rhys Ó Briain
"""
_BRITISH_BOYS = """
Noah Oliver George Arthur Leo Harry Oscar Archie Henry Theodore Freddie Jack Charlie Theo Alfie Jacob
Thomas Finley Arlo William Lucas Roman Tommy Isaac Teddy Alexander Luca Edward James Joshua Albie Elijah
Max Reggie Hugo Louie Ezra Jaxon Logan Sonny Ethan Joseph Harrison Rory Adam Jude Dylan Samuel Daniel
Benjamin Mason Harvey Toby Sebastian Frankie Jenson Hunter Ronnie Albert Zachary Riley Jesse Louis Ralph
Ollie Alfred John Michael Tyler Liam Stanley Bobby Leon Ryan Kai Nathan Caleb Felix Jayden Elliot Finn
Matthew Aaron Dexter David Blake Charles Chester Callum Harley Brody Jamie Connor Kian Lewis Owen Cameron
Kyle Ben Sam Robert Richard Peter Patrick Christopher Nicholas Anthony Stephen Andrew Jake Luke Dominic
Seán Oisín Ciarán Rhys Dafydd Gethin Cai Ewan Fraser Angus Alasdair Zac Reuben Ezekiel Gabriel Rafael
"""
_BRITISH_GIRLS = """
Olivia Amelia Isla Lily Ava Freya Ivy Florence Willow Isabella Mia Elsie Sophia Evie Grace Rosie Daisy
Ella Sienna Poppy Evelyn Hallie Harper Sofia Ada Maya Emily Ruby Matilda Alice Phoebe Isabelle Millie
Bonnie Penelope Violet Aurora Luna Margot Esme Charlotte Sophie Lilly Zoë Chloé Chloe Emma Jessica Lucy
Hannah Holly Megan Lauren Katie Ellie Eleanor Katherine Elizabeth Abigail Amber Erin Imogen Scarlett
Layla Lola Nancy Orla Thea Maisie Molly Bella Darcie Eliza Eva Georgia Harriet Jasmine Leah Lexi Lottie
Mabel Martha Niamh Aoife Siobhán Saoirse Róisín Cerys Seren Megan Ffion Eilidh Kirsty Rebecca Sarah
Victoria Rachel Natalie Naomi Anna Maria Beatrice Clara Edith Iris Robyn Summer Skye Paige Renée Léa
Anaïs Noémie Aimée Gracie Darcy Lacey Ivy-Rose Lily-Mae Ava-Rose Mary-Jane Ella-Louise
"""
_SOUTH_ASIAN_FAMILY = """
Patel Khan Singh Begum Ali Hussain Ahmed Kaur Shah Akhtar Bibi Miah Rahman Islam Iqbal Mahmood Hussein
Uddin Chaudhry Malik Sharma Kumar Mistry Parmar Rana Raza Aziz Butt Mirza Anwar Bashir Qureshi Javed
Nawaz Siddiqui Gupta Chauhan Joshi Desai Mehta Bhatti Sandhu Dhillon Rehman Karim Hassan Haque Ahmad
Choudhury D'Souza D'Costa Fernandes Pillai Nair Reddy Rao
"""
_SOUTH_ASIAN_BOYS = """
Muhammad Mohammed Mohammad Ibrahim Yusuf Musa Zayn Ayaan Aarav Arjun Rehan Hamza Ali Omar Adam Zakariya
Ismail Haris Rayyan Hassan Abdullah Krish Vihaan Aryan Dev Rohan Harjeet Gurpreet Sukhdeep Amir Bilal
Idris Ahmed Imran Arman Kabir Ishaan Veer Reyansh Sahil
"""
_SOUTH_ASIAN_GIRLS = """
Aisha Maryam Fatima Zara Hafsa Inaya Hania Aleena Amira Anaya Ayesha Khadija Safa Zainab Eshal Aanya
Diya Priya Simran Jasleen Harleen Kiran Anika Sana Noor Mehreen Rania Iqra Nadia Alishba Manahil Riya
Saanvi Ishani Myra
"""
_AFRICAN_FAMILY = """
Okafor Adeyemi Mensah Owusu Boateng Asante Okonkwo Adebayo Ogunleye Obi Eze Nwosu Afolabi Bakare Osei
Appiah Danso Agyeman Olaniyan Babatunde Adewale Okoro Akinola Adeleke Ogunbiyi Kamara Sesay Conteh
Bangura Diallo Ndiaye Oyelaran Adeniyi Oladipo Chukwu Nwachukwu Ansah Frimpong Darko Amoah
"""
_AFRICAN_BOYS = """
David Daniel Samuel Joshua Emmanuel Oluwaseun Chinedu Emeka Kwame Kofi Kwabena Tobi Tunde Femi Ayodele
Ebuka Chidi Nnamdi Yaw Kojo Ifeanyi Michael Jayden Elijah Isaac Joel Caleb Nathaniel Kayode Obinna
"""
_AFRICAN_GIRLS = """
Favour Precious Blessing Esther Grace Deborah Adaeze Chioma Ngozi Ama Akosua Abena Ayomide Temitope
Oluwatobi Chiamaka Adwoa Efua Folake Funmilayo Zoe Hannah Abigail Victoria Princess Angel Nia Amara
"""
_POLISH_FAMILY = """
Nowak Kowalski Wiśniewski Wójcik Kowalczyk Kamiński Lewandowski Zieliński Szymański Woźniak Dąbrowski
Kozłowski Jankowski Mazur Kwiatkowski Krawczyk Piotrowski Grabowski Nowakowski Pawłowski Michalski
Nowicki Adamczyk Dudek Zając Wieczorek Jabłoński Król Majewski Olszewski
"""
_POLISH_BOYS = """
Jakub Łukasz Szymon Kacper Mateusz Filip Michał Wojciech Bartosz Piotr Antoni Jan Aleksander Franciszek
Mikołaj Wiktor Dawid Paweł Tomasz Krzysztof Oliwer Igor Nikodem Stanisław
"""
_POLISH_GIRLS = """
Zuzanna Julia Maja Zofia Hanna Lena Aleksandra Amelia Natalia Wiktoria Oliwia Alicja Gabriela Małgorzata
Agnieszka Katarzyna Magdalena Weronika Nikola Martyna Zuzia Laura Antonina
"""
_EUROPEAN_FAMILY = """
Popescu Ionescu Popa Constantin Stan Dumitru Stoica Silva Santos Ferreira Pereira Oliveira Costa
Rodrigues Martins Sousa Gonçalves Petrov Ivanova Kazlauskas Jankauskas Bērziņš Rossi Russo Bianchi
Müller Schmidt García Fernández López
"""
_EUROPEAN_BOYS = """
Andrei Ștefan Alexandru Mihai Darius Luca João Tomás Rodrigo Tiago Afonso Matei David Lukas Mateo Nikola
Gabriel Rafael Diogo Matías
"""
_EUROPEAN_GIRLS = """
Ioana Maria Elena Andreea Bianca Sofia Beatriz Inês Mariana Leonor Carolina Emilija Ieva Giulia Chiara
Lucía Marta Ana Daria Eva
"""
_ARAB_SOMALI_FAMILY = """
Mohamed Ahmed Hassan Abdi Ali Omar Farah Warsame Yusuf Ibrahim Abdullahi Hussein Nur Osman Jama Aden
Said Mahmoud Saleh Al-Hashimi El-Sayed Haddad Khalil Nasser Mansour
"""
_ARAB_SOMALI_BOYS = """
Mohamed Abdi Hamza Yusuf Omar Ahmed Abdirahman Zakaria Bilal Khalid Ibrahim Musa Idris Ayoub Yahya Adam
Karim Tariq Sami Amir
"""
_ARAB_SOMALI_GIRLS = """
Hodan Ayan Fadumo Layla Amina Hibo Sumaya Hafsa Sahra Ilhan Nasra Maryam Yasmin Leila Noor Huda Salma
Rania Lina Sara
"""
_CHINESE_FAMILY = "Wang Li Zhang Chen Liu Yang Huang Zhao Wu Zhou Lin Ng Wong Chan Cheung Lam Ho Tang Leung Lau"
_CHINESE_BOYS = "Wei Jun Hao Yu Zihan Haoran Junjie Kai Ethan Ryan Lucas Jason Leo Max Daniel Oscar"
_CHINESE_GIRLS = "Xin Mei Ling Yan Jing Xinyi Yuxi Zoe Chloe Emily Grace Sophie Hannah Ella Mia Olivia"

# Prefixes and suffixes of English toponymic surnames: the long tail of rare family names.
_TAIL_PREFIXES = ("Ash Black Brad Brom Cald Chat Craw Dar Elm Fair Fen Gold Hather Hart Hol Kirk Lang "
                  "Lin Mar Mid Moor North Oak Pen Red Ridge Ross Shaw Shel Stan Thorn Wad West Whit "
                  "Wick Wood Yar Bur Cran Dun").split()
_TAIL_SUFFIXES = "worth wood ley ton field well by ham combe croft den ford hurst more stead thwaite wick".split()


@dataclass(frozen=True)
class NameGroup:
    """Names of one origin group: ranked lists and the power-law exponent of their shares."""

    name: str
    share: float  # of families (see the module docstring)
    family: tuple[str, ...]
    boys: tuple[str, ...]
    girls: tuple[str, ...]
    gendered_family: bool = False  # Polish -ski / -ska


def _ranked(text: str) -> tuple[str, ...]:
    """Whitespace-separated names, rank order kept, duplicates dropped; the particles "ap" and "Ó"
    rejoin the word after them (ap Rhys, Ó Briain)."""
    words = text.split()
    out, i = [], 0
    while i < len(words):
        if words[i] in ("ap", "Ó") and i + 1 < len(words):
            out.append(f"{words[i]} {words[i + 1]}")
            i += 2
        else:
            out.append(words[i])
            i += 1
    return tuple(dict.fromkeys(out))


GROUPS = (
    NameGroup("british_irish", 0.76, _ranked(_BRITISH_FAMILY), _ranked(_BRITISH_BOYS), _ranked(_BRITISH_GIRLS)),
    NameGroup("south_asian", 0.09, _ranked(_SOUTH_ASIAN_FAMILY), _ranked(_SOUTH_ASIAN_BOYS),
              _ranked(_SOUTH_ASIAN_GIRLS)),
    NameGroup("black_african", 0.04, _ranked(_AFRICAN_FAMILY), _ranked(_AFRICAN_BOYS), _ranked(_AFRICAN_GIRLS)),
    NameGroup("polish", 0.03, _ranked(_POLISH_FAMILY), _ranked(_POLISH_BOYS), _ranked(_POLISH_GIRLS),
              gendered_family=True),
    NameGroup("other_european", 0.04, _ranked(_EUROPEAN_FAMILY), _ranked(_EUROPEAN_BOYS),
              _ranked(_EUROPEAN_GIRLS)),
    NameGroup("arab_somali", 0.03, _ranked(_ARAB_SOMALI_FAMILY), _ranked(_ARAB_SOMALI_BOYS),
              _ranked(_ARAB_SOMALI_GIRLS)),
    NameGroup("chinese", 0.01, _ranked(_CHINESE_FAMILY), _ranked(_CHINESE_BOYS), _ranked(_CHINESE_GIRLS)),
)

# Power-law exponents of share by rank (see the module docstring): Smith 1.3 %, tenth about 0.4 %
# -> s = log(1.3 / 0.4) / log(10) ~ 0.5. Given names: top about 1.2 %, tenth about 0.5 % -> ~0.4.
FAMILY_RANK_EXPONENT = 0.5
GIVEN_RANK_EXPONENT = 0.4
TOP_FAMILY_SHARE = 0.013  # Smith's share of the population of England and Wales, roughly


def _feminine(polish_family: str) -> str:
    for masc, fem in (("ski", "ska"), ("cki", "cka"), ("dzki", "dzka")):
        if polish_family.endswith(masc):
            return polish_family[: -len(masc)] + fem
    return polish_family


class _Weighted:
    """Draws from a ranked list with power-law weights; cumulative weights precomputed."""

    def __init__(self, items: Iterable[str], exponent: float):
        self.items = list(items)
        self.cum = []
        total = 0.0
        for rank in range(1, len(self.items) + 1):
            total += rank ** -exponent
            self.cum.append(total)

    def draw(self, rng: random.Random) -> str:
        return rng.choices(self.items, cum_weights=self.cum)[0]

    def share_covered(self) -> float:
        """What the ranked list would cover of the population at TOP_FAMILY_SHARE for rank 1."""
        return TOP_FAMILY_SHARE * self.cum[-1]


# ---- nicknames and spelling variants (common English hypocorisms; assembled for this benchmark) ----

NICKNAMES: dict[str, tuple[str, ...]] = {
    "William": ("Bill", "Will", "Billy", "Liam"), "John": ("Jack", "Johnny", "Jon"),
    "Alfred": ("Alfie", "Alf"), "Eleanor": ("Ellie", "Nell", "Elle"), "Katherine": ("Katie", "Kate", "Kath"),
    "Elizabeth": ("Beth", "Lizzie", "Libby", "Eliza"), "Margaret": ("Maggie", "Peggy"),
    "Robert": ("Rob", "Bobby", "Bob"), "Richard": ("Rick", "Richie", "Dick"), "James": ("Jim", "Jimmy", "Jamie"),
    "Thomas": ("Tom", "Tommy"), "Alexander": ("Alex", "Alfie", "Sandy", "Xander"),
    "Christopher": ("Chris", "Kit"), "Nicholas": ("Nick", "Nicky"), "Michael": ("Mike", "Mikey"),
    "Matthew": ("Matt",), "Benjamin": ("Ben", "Benji"), "Samuel": ("Sam", "Sammy"), "Daniel": ("Dan", "Danny"),
    "Joseph": ("Joe", "Joey"), "Edward": ("Ed", "Eddie", "Ted", "Teddy"), "Henry": ("Harry", "Hal"),
    "Theodore": ("Theo", "Teddy"), "Frederick": ("Freddie", "Fred"), "Archibald": ("Archie",),
    "Oliver": ("Ollie",), "Charles": ("Charlie", "Chaz"), "Anthony": ("Tony", "Ant"), "Stephen": ("Steve",),
    "Andrew": ("Andy", "Drew"), "Patrick": ("Paddy", "Pat"), "Joshua": ("Josh",), "Zachary": ("Zac", "Zach"),
    "Nathaniel": ("Nate", "Nat"), "Sebastian": ("Seb",), "Isabella": ("Bella", "Izzy", "Issy"),
    "Isabelle": ("Izzy", "Belle"), "Charlotte": ("Lottie", "Charlie"), "Victoria": ("Vicky", "Tori"),
    "Rebecca": ("Becky", "Becca"), "Abigail": ("Abbie", "Abby"), "Jessica": ("Jess", "Jessie"),
    "Florence": ("Flo", "Florrie"), "Matilda": ("Tilly", "Tilda"), "Penelope": ("Penny",),
    "Harriet": ("Hattie",), "Amelia": ("Millie", "Amy"), "Emily": ("Em", "Emmy"), "Olivia": ("Liv", "Livvy"),
    "Margot": ("Margo",), "Natalie": ("Nat",), "Samantha": ("Sam",), "Alexandra": ("Alex", "Lexi"),
    "Gabriel": ("Gabe",), "Aleksander": ("Olek",), "Aleksandra": ("Ola",), "Małgorzata": ("Gosia",),
    "Katarzyna": ("Kasia",), "Jakub": ("Kuba",), "Zuzanna": ("Zuzia",), "Mohammed": ("Mo",),
    "Muhammad": ("Mo",), "Mohammad": ("Mo",), "Ibrahim": ("Ibby",), "Oluwaseun": ("Seun",),
    "Oluwatobi": ("Tobi",), "Temitope": ("Tope",), "Funmilayo": ("Funmi",), "Ayodele": ("Ayo",),
    "Christian": ("Chris",), "Eleanora": ("Ellie",), "Maria": ("Mia",), "Sarah": ("Sally",),
    "Jacob": ("Jake", "Jack"), "Elliot": ("Eli",), "Elijah": ("Eli",), "Reginald": ("Reggie",),
    "Ronald": ("Ronnie",), "Louis": ("Louie",), "Albert": ("Albie", "Bert"), "Stanley": ("Stan",),
    "Francis": ("Frankie", "Frank"), "Evelyn": ("Evie",), "Genevieve": ("Evie",), "Elsa": ("Elsie",),
    "Dominic": ("Dom",), "Cameron": ("Cam",), "Tobias": ("Toby",), "Maximilian": ("Max",),
}
# Nickname -> formal forms (Alfie is a given name in its own right, and a nickname of Alfred).
_FORMAL_OF: dict[str, list[str]] = {}
for _formal, _nicks in NICKNAMES.items():
    for _nick in _nicks:
        _FORMAL_OF.setdefault(_nick, []).append(_formal)

# Spellings of the same name that records mix up (not typos: the writer heard it and spelt it).
SPELLING_VARIANTS: tuple[tuple[str, ...], ...] = (
    ("Mohammed", "Muhammad", "Mohammad", "Mohamed", "Muhammed"), ("John", "Jon"), ("Smith", "Smyth"),
    ("Thompson", "Thomson"), ("Stephen", "Steven"), ("Sarah", "Sara"), ("Isabel", "Isobel", "Isabelle", "Isabella"),
    ("Katherine", "Catherine", "Kathryn"), ("Leah", "Lea"), ("Zoë", "Zoe", "Zoey"), ("Chloé", "Chloe", "Chloë"),
    ("Lily", "Lilly", "Lillie"), ("Aisha", "Ayesha", "Aysha"), ("Hussain", "Hussein", "Husain"),
    ("Philip", "Phillip"), ("Jayden", "Jaden", "Jaiden"), ("Freddie", "Freddy"), ("Alfie", "Alfy"),
    ("Ellie", "Elly"), ("Harvey", "Harvie"), ("Louie", "Louis"), ("Evie", "Evey"), ("Sophie", "Sophy"),
    ("Amelia", "Emilia"), ("Darcie", "Darcey", "Darcy"), ("Nicholls", "Nichols"), ("Davies", "Davis"),
    ("Clarke", "Clark"), ("Reid", "Reed", "Read"), ("Macdonald", "McDonald", "MacDonald"),
    ("Mackenzie", "McKenzie"), ("Chaudhry", "Choudhury", "Chowdhury"), ("Ahmed", "Ahmad"),
    ("Rahman", "Rehman"), ("Fatima", "Fatimah"), ("Maryam", "Mariam"), ("Yusuf", "Yousef", "Yusuf"),
    ("Zainab", "Zaynab"), ("Hannah", "Hanna"), ("Layla", "Leila", "Laila"), ("Theodore", "Theodor"),
    ("Ava", "Eva"), ("Mia", "Miya"), ("Scarlett", "Scarlet"), ("Ruby", "Rubie"), ("Matthew", "Mathew"),
)
_VARIANTS_OF: dict[str, tuple[str, ...]] = {}
for _group in SPELLING_VARIANTS:
    for _name in _group:
        _VARIANTS_OF[_name] = tuple(n for n in dict.fromkeys(_group) if n != _name)

# ---- places -------------------------------------------------------------------------------------

# Real postcode areas with their main town, weighted roughly by population (more districts for the
# large ones). Districts are drawn within 1..max_district; not every drawn district exists.
_AREAS = (
    ("B", "Birmingham", 40, 5), ("M", "Manchester", 35, 4), ("LS", "Leeds", 29, 3), ("L", "Liverpool", 38, 3),
    ("S", "Sheffield", 36, 3), ("BS", "Bristol", 41, 3), ("NE", "Newcastle upon Tyne", 30, 3),
    ("NG", "Nottingham", 25, 2), ("LE", "Leicester", 19, 2), ("CF", "Cardiff", 24, 2), ("E", "London", 18, 4),
    ("N", "London", 22, 3), ("SE", "London", 28, 4), ("SW", "London", 20, 3), ("W", "London", 14, 2),
    ("BD", "Bradford", 24, 2), ("CV", "Coventry", 23, 2), ("PL", "Plymouth", 35, 1), ("HU", "Hull", 20, 1),
    ("ST", "Stoke-on-Trent", 21, 1), ("DE", "Derby", 24, 1), ("SO", "Southampton", 53, 1),
    ("PO", "Portsmouth", 41, 1), ("G", "Glasgow", 84, 3), ("EH", "Edinburgh", 55, 2), ("BT", "Belfast", 49, 2),
    ("NR", "Norwich", 35, 1), ("EX", "Exeter", 39, 1), ("YO", "York", 43, 1), ("OX", "Oxford", 49, 1),
    ("CB", "Cambridge", 25, 1), ("LU", "Luton", 7, 1), ("SL", "Slough", 9, 1), ("OL", "Oldham", 16, 1),
    ("BB", "Blackburn", 18, 1), ("WV", "Wolverhampton", 16, 1), ("SA", "Swansea", 73, 1), ("TS", "Middlesbrough", 29, 1),
)
_UNIT_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"  # the inward code's last two letters never use C I K M O V
_STREETS = ("High Street", "Church Road", "Station Road", "Victoria Road", "Park Road", "Green Lane",
            "Manor Road", "Church Lane", "Park Avenue", "The Avenue", "Queens Road", "New Road",
            "Grange Road", "Kings Road", "Albert Road", "Mill Lane", "School Lane", "The Crescent",
            "London Road", "North Street", "Windsor Road", "York Road", "Springfield Road", "West Street",
            "George Street", "Highfield Road", "Alexandra Road", "Main Street", "Chapel Street", "St John's Road",
            "St Mary's Close", "Orchard Way", "Meadow View", "Beech Grove", "Oak Drive", "Cedar Close",
            "Willow Walk", "Mount Pleasant", "Broadway", "Richmond Terrace", "Clarendon Gardens",
            "Coronation Street", "Brook Street", "Castle Hill", "Hawthorn Avenue", "Elm Court")
_ABBREVIATIONS = (("Street", "St"), ("Road", "Rd"), ("Avenue", "Ave"), ("Lane", "Ln"), ("Close", "Cl"),
                  ("Drive", "Dr"), ("Gardens", "Gdns"), ("Terrace", "Terr"), ("Crescent", "Cres"), ("Court", "Ct"))

# Real local-authority numbers accepted by python-stdnum's UPN check (a sample of them).
_LA_NUMBERS = (201, 202, 204, 206, 208, 209, 212, 213, 302, 304, 305, 306, 308, 316, 318, 330, 331, 335,
               336, 341, 343, 350, 352, 354, 373, 380, 383, 384, 390, 800, 801, 803, 821, 825, 830, 845,
               850, 855, 860, 873, 878, 881, 886, 908, 919, 925, 926, 936, 937, 938)

# ---- the truth ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """One real child: what every record of them should say."""

    person_id: str
    family_id: str
    group: str
    given_names: tuple[str, ...]
    family_name: str
    date_of_birth: dt.date
    gender: str  # female | male
    address: Address
    former_family_name: str | None = None  # the family name before a change (None: never changed)
    former_address: Address | None = None  # where the child lived before moving (None: never moved)
    nhs_number: str | None = None
    pupil_number: str | None = None
    twin_id: str | None = None  # the co-twin's person_id
    carer_name: str = ""
    carer_phone: str = ""


# ---- the corruption mix -------------------------------------------------------------------------

# Every label a SourceRecord's ``corruptions`` can carry. The first group have a rate in Mix.rates;
# the life events come from the person (Mix.name_change_rate, Mix.moved_rate): a record of a child
# who moved holds the old address half the time, and a record of a child whose family name changed
# holds the old name, the new one with the old as PreviousName, or the new one alone.
CORRUPTIONS = (
    "typo_given", "typo_family", "nickname", "spelling_variant", "swap_names", "middle_dropped",
    "preferred_name", "dob_swap_day_month", "dob_digit", "dob_year", "missing_address",
    "address_abbreviated", "postcode_format", "gender_unknown", "case_variant", "diacritics_dropped",
    "punctuation_variant", "missing_nhs", "missing_upn",
)
LIFE_EVENTS = ("moved", "name_change_stale", "name_change_with_previous", "name_change_unrecorded")


@dataclass(frozen=True)
class Mix:
    """Rates of each corruption per record (independent), the person-level event rates, and how
    often each kind of organisation records each identifier."""

    name: str
    rates: dict[str, float]
    name_change_rate: float = 0.02     # share of children whose family name changed
    moved_rate: float = 0.10           # share of children who moved; their records may hold the old address
    nhs_recorded: dict[str, float] = field(default_factory=lambda: {
        "local_authority": 0.6, "health": 0.97, "education": 0.15})
    upn_recorded: dict[str, float] = field(default_factory=lambda: {
        "local_authority": 0.4, "health": 0.0, "education": 0.98})

    def scaled(self, factor: float, name: str | None = None) -> "Mix":
        """The same mix with every corruption rate multiplied by ``factor`` (capped at 0.9)."""
        return dataclasses.replace(self, name=name or f"{self.name}x{factor:g}",
                                   rates={k: min(0.9, v * factor) for k, v in self.rates.items()})


_DEFAULT_RATES = {
    "typo_given": 0.04, "typo_family": 0.04, "nickname": 0.04, "spelling_variant": 0.03,
    "swap_names": 0.01, "middle_dropped": 0.30, "preferred_name": 0.05, "dob_swap_day_month": 0.015,
    "dob_digit": 0.015, "dob_year": 0.01, "missing_address": 0.03, "address_abbreviated": 0.15,
    "postcode_format": 0.10, "gender_unknown": 0.03, "case_variant": 0.08, "diacritics_dropped": 0.5,
    "punctuation_variant": 0.2, "missing_nhs": 0.1, "missing_upn": 0.1,
}

MIXES: dict[str, Mix] = {
    "clean": Mix("clean", {k: 0.0 for k in _DEFAULT_RATES}, name_change_rate=0.0, moved_rate=0.0),
    "default": Mix("default", dict(_DEFAULT_RATES)),
    "harsh": Mix("harsh", {
        "typo_given": 0.10, "typo_family": 0.10, "nickname": 0.10, "spelling_variant": 0.08,
        "swap_names": 0.03, "middle_dropped": 0.5, "preferred_name": 0.10, "dob_swap_day_month": 0.04,
        "dob_digit": 0.04, "dob_year": 0.03, "missing_address": 0.10, "address_abbreviated": 0.3,
        "postcode_format": 0.3, "gender_unknown": 0.08, "case_variant": 0.2, "diacritics_dropped": 0.7,
        "punctuation_variant": 0.4, "missing_nhs": 0.3, "missing_upn": 0.3,
    }, name_change_rate=0.05, moved_rate=0.2),
}
# The issue's own scenario: no identifiers at all, so everything rests on names, dates and places.
MIXES["noids"] = dataclasses.replace(MIXES["default"], name="noids",
                                     nhs_recorded={k: 0.0 for k in MIXES["default"].nhs_recorded},
                                     upn_recorded={k: 0.0 for k in MIXES["default"].upn_recorded})
MIXES["harsh-noids"] = dataclasses.replace(MIXES["harsh"], name="harsh-noids",
                                           nhs_recorded={k: 0.0 for k in MIXES["harsh"].nhs_recorded},
                                           upn_recorded={k: 0.0 for k in MIXES["harsh"].upn_recorded})


def mix_named(mix: str | Mix) -> Mix:
    if isinstance(mix, Mix):
        return mix
    try:
        return MIXES[mix]
    except KeyError:
        raise ValueError(f"unknown mix {mix!r}; known: {', '.join(MIXES)}") from None


# ---- generation ---------------------------------------------------------------------------------

TWIN_RATE = 0.016          # twin maternities per maternity (ONS: ~15-16 per 1,000)
SAME_SEX_TWINS = 0.65      # share of twin pairs of the same sex (all MZ + half of DZ)
ALLITERATIVE_TWINS = 0.3   # twins given names with the same first letter (assumed; the hard case)
HYPHENATED_FAMILY = 0.02   # families with a double-barrelled name (assumed)
MIDDLE_NAME = 0.4          # children with a second given name (assumed)
# Children per family among families with children: roughly the ONS Families and Households shape.
CHILDREN_PER_FAMILY = ((1, 0.45), (2, 0.38), (3, 0.12), (4, 0.04), (5, 0.01))
STATE_SCHOOL = 0.93        # share of school-age children in state schools (who have a UPN)
HAS_NHS_NUMBER = 0.98      # children born or registered in England and Wales


class _Pools:
    def __init__(self):
        self.group_names = [g.name for g in GROUPS]
        self.group_cum = list(_accumulate(g.share for g in GROUPS))
        self.family = {g.name: _Weighted(g.family, FAMILY_RANK_EXPONENT) for g in GROUPS}
        self.boys = {g.name: _Weighted(g.boys, GIVEN_RANK_EXPONENT) for g in GROUPS}
        self.girls = {g.name: _Weighted(g.girls, GIVEN_RANK_EXPONENT) for g in GROUPS}
        self.groups = {g.name: g for g in GROUPS}
        british = self.family["british_irish"]
        # The ranked British list covers this much of the population at Smith's real share; the
        # rest of the group's family names come from the toponymic tail.
        self.british_tail_share = max(0.0, 1.0 - british.share_covered())
        self.area_cum = list(_accumulate(a[3] for a in _AREAS))


def _accumulate(values):
    total = 0.0
    for v in values:
        total += v
        yield total


_POOLS: _Pools | None = None


def _pools() -> _Pools:
    global _POOLS
    if _POOLS is None:
        _POOLS = _Pools()
    return _POOLS


def _family_name(rng: random.Random, group: str) -> str:
    pools = _pools()
    if group == "british_irish" and rng.random() < pools.british_tail_share:
        return rng.choice(_TAIL_PREFIXES) + rng.choice(_TAIL_SUFFIXES)
    return pools.family[group].draw(rng)


def _given(rng: random.Random, group: str, gender: str, initial: str | None = None) -> str:
    pools = _pools()
    source = pools.boys[group] if gender == "male" else pools.girls[group]
    if group != "british_irish" and rng.random() < 0.25:  # British names are given across groups
        source = pools.boys["british_irish"] if gender == "male" else pools.girls["british_irish"]
    for _ in range(50 if initial else 1):
        name = source.draw(rng)
        if not initial or name[0] == initial:
            return name
    return name


def _postcode(rng: random.Random) -> tuple[str, str]:
    pools = _pools()
    area, town, max_district, _ = rng.choices(_AREAS, cum_weights=pools.area_cum)[0]
    district = str(rng.randint(1, max_district))
    if area in ("E", "W", "N", "SE", "SW") and rng.random() < 0.1:
        district = "1" + rng.choice("ABCDEHPW")  # London's sub-districts: EC1A, W1D, ...
    inward = f"{rng.randint(0, 9)}{rng.choice(_UNIT_LETTERS)}{rng.choice(_UNIT_LETTERS)}"
    return f"{area}{district} {inward}", town


def _address(rng: random.Random) -> Address:
    postcode, town = _postcode(rng)
    street = f"{rng.randint(1, 240)} {rng.choice(_STREETS)}"
    if rng.random() < 0.15:
        return Address(lines=(f"Flat {rng.randint(1, 40)}", street), postcode=postcode, town=town)
    return Address(lines=(street,), postcode=postcode, town=town)


def nhs_check_digit(nine: str) -> int | None:
    """Modulus 11 check digit of the first nine digits (None when the body cannot be used: 10)."""
    total = sum(int(d) * w for d, w in zip(nine, range(10, 1, -1)))
    check = 11 - total % 11
    if check == 11:
        return 0
    return None if check == 10 else check


def _nhs_number(index: int, salt: int) -> str | None:
    """A unique valid NHS number for person ``index`` (a bijection of the index into England's 4xx
    range, or the 6xx range when the 4xx body has no check digit)."""
    body = (index * 38_196_601 + salt) % 100_000_000  # odd, not a multiple of 5: a bijection
    for base in (400_000_000, 600_000_000):
        nine = f"{base + body:09d}"
        check = nhs_check_digit(nine)
        if check is not None:
            return nine + str(check)
    return None


def _pupil_number(index: int, salt: int, entry_year: int) -> str:
    """A unique valid UPN: check letter, LA number, establishment number, entry year, serial."""
    m = (index * 3_819_661 + salt) % 10_000_000  # coprime with 10**7: a bijection
    la = _LA_NUMBERS[(index // 10_000_000 + salt) % len(_LA_NUMBERS)]
    body = f"{la:03d}{m // 1000:04d}{entry_year % 100:02d}{m % 1000:03d}"
    return stdnum_upn.calc_check_digit(body) + body


def _phone(rng: random.Random) -> str:
    return f"07700 9{rng.randint(0, 99999):05d}"  # Ofcom's drama range: never a real number


def generate(n_people: int, seed: int, mix: str | Mix = "default", *, today: dt.date | None = None,
             twin_rate: float = TWIN_RATE, first_id: int = 0) -> list[Person]:
    """``n_people`` children in families, with known truth. ``first_id`` offsets the person ids
    and identifiers, so that several calls (with distinct ranges) build one large population in
    pieces without two children sharing an NHS or pupil number."""
    mix = mix_named(mix)
    today = today or dt.date.today()
    rng = random.Random(f"population/{seed}/{first_id}")
    salt = random.Random(f"identifiers/{seed}").randrange(1 << 30)
    earliest = today - dt.timedelta(days=18 * 365 + 4)  # born in the last 0-17 years
    span = (today - earliest).days
    sizes, size_cum = [s for s, _ in CHILDREN_PER_FAMILY], list(_accumulate(w for _, w in CHILDREN_PER_FAMILY))
    pools = _pools()
    people: list[Person] = []
    family_no = 0
    while len(people) < n_people:
        family_no += 1
        family_id = f"F{first_id + family_no:08d}"
        group = rng.choices(pools.group_names, cum_weights=pools.group_cum)[0]
        family = _family_name(rng, group)
        if rng.random() < HYPHENATED_FAMILY:
            other = _family_name(rng, "british_irish")
            if other != family:
                family = f"{family}-{other}"
        address = _address(rng)
        former_family = None
        if rng.random() < mix.name_change_rate:
            former_family = _family_name(rng, group)  # e.g. a new step-parent's name taken by all
            former_family, family = family, former_family
        moved = rng.random() < mix.moved_rate
        former_address = _address(rng) if moved else None
        carer = f"{_given(rng, group, rng.choice(('female', 'male')))} {family}"
        phone = _phone(rng)
        births: list[dt.date] = [earliest + dt.timedelta(days=rng.randrange(span))]
        for _ in range(rng.choices(sizes, cum_weights=size_cum)[0] - 1):
            nxt = births[-1] + dt.timedelta(days=rng.randint(300, 2200))
            if nxt > today:
                break
            births.append(nxt)
        for dob in births:
            if len(people) >= n_people:
                break
            twins = rng.random() < twin_rate and len(people) + 2 <= n_people
            gender = rng.choice(("female", "male"))
            genders = [gender]
            if twins:
                genders.append(gender if rng.random() < SAME_SEX_TWINS else ("male" if gender == "female" else "female"))
            first_names: list[str] = []
            for g in genders:
                initial = first_names[0][0] if first_names and rng.random() < ALLITERATIVE_TWINS else None
                for _ in range(20):  # twins never share a first name
                    name = _given(rng, group, g, initial)
                    if name not in first_names:
                        break
                first_names.append(name)
            ids = []
            for g, first in zip(genders, first_names):
                index = first_id + len(people)
                person_id = f"P{index:08d}"
                ids.append(person_id)
                given = (first,)
                if rng.random() < MIDDLE_NAME:
                    middle = _given(rng, "british_irish" if rng.random() < 0.6 else group, g)
                    if middle != first:
                        given = (first, middle)
                fam = _feminine(family) if pools.groups[group].gendered_family and g == "female" else family
                former = None
                if former_family:
                    former = _feminine(former_family) if pools.groups[group].gendered_family and g == "female" \
                        else former_family
                age_years = (today - dob).days / 365.25
                pupil = None
                if age_years >= 4 and rng.random() < STATE_SCHOOL:
                    pupil = _pupil_number(index, salt, dob.year + 4)
                nhs = _nhs_number(index, salt) if rng.random() < HAS_NHS_NUMBER else None
                people.append(Person(
                    person_id=person_id, family_id=family_id, group=group, given_names=given,
                    family_name=fam, date_of_birth=dob, gender=g, address=address,
                    former_family_name=former, former_address=former_address,
                    nhs_number=nhs, pupil_number=pupil, carer_name=carer, carer_phone=phone))
            if twins:
                a, b = people[-2], people[-1]
                people[-2] = dataclasses.replace(a, twin_id=b.person_id)
                people[-1] = dataclasses.replace(b, twin_id=a.person_id)
    return people


# ---- the organisations' records -----------------------------------------------------------------

@dataclass(frozen=True)
class OrgSpec:
    code: str
    kind: str  # an organisation kind of the registry (gateway.trust.registry.KINDS)
    services: tuple[tuple[str, str], ...]  # (service, practitioner role)
    school_age_only: bool = False


ORGS = (
    OrgSpec("LA", "local_authority", (("Children's social care", "social worker"),
                                      ("Early help", "family support worker"))),
    OrgSpec("HEALTH", "health", (("Health visiting", "health visitor"), ("School nursing", "school nurse"),
                                 ("Community paediatrics", "paediatrician"))),
    OrgSpec("SCHOOL", "education", (("Education", "designated safeguarding lead"),
                                    ("Special educational needs", "SENCO")), school_age_only=True),
)


class SourceRecord(NamedTuple):
    """One organisation's record of one child: the truth it stands for, and what was changed."""

    person_id: str
    update: ChildUpdate
    corruptions: tuple[str, ...]


_QWERTY_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_NEIGHBOURS: dict[str, str] = {}
for _r, _row in enumerate(_QWERTY_ROWS):
    for _c, _ch in enumerate(_row):
        near = [_row[i] for i in (_c - 1, _c + 1) if 0 <= i < len(_row)]
        for _dr in (-1, 1):
            if 0 <= _r + _dr < len(_QWERTY_ROWS):
                other = _QWERTY_ROWS[_r + _dr]
                near += [other[i] for i in (_c - 1, _c, _c + 1) if 0 <= i < len(other)]
        _NEIGHBOURS[_ch] = "".join(near)


def typo(rng: random.Random, word: str) -> str:
    """One keyboard error: insert, delete, substitute (a neighbouring key) or swap two adjacent
    letters. Never the first letter of a short name alone, never an empty result."""
    letters = [i for i, c in enumerate(word) if c.isalpha()]
    if len(letters) < 3:
        return word
    for _ in range(10):
        kind = rng.choice(("insert", "delete", "substitute", "transpose"))
        i = rng.choice(letters[1:])  # the first letter survives most real typos
        c = word[i]
        near = _NEIGHBOURS.get(c.lower(), "aeiou")
        k = rng.choice(near)
        k = k.upper() if c.isupper() else k
        if kind == "insert":
            out = word[:i] + rng.choice((c.lower(), k)) + word[i:]
        elif kind == "delete":
            out = word[:i] + word[i + 1:]
        elif kind == "substitute":
            out = word[:i] + k + word[i + 1:]
        else:
            if i + 1 >= len(word) or not word[i + 1].isalpha():
                continue
            out = word[:i] + word[i + 1] + word[i] + word[i + 2:]
        if out != word:
            return out
    return word


def strip_diacritics(text: str) -> str:
    out = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return out.replace("Ł", "L").replace("ł", "l")


def _valid_date(year: int, month: int, day: int) -> dt.date | None:
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def _dob_digit(rng: random.Random, dob: dt.date, today: dt.date) -> dt.date | None:
    text = dob.strftime("%Y%m%d")
    for _ in range(20):
        i = rng.choice((2, 3, 4, 5, 6, 7))  # not the century
        digit = str(rng.choice([d for d in range(10) if str(d) != text[i]]))
        changed = text[:i] + digit + text[i + 1:]
        date = _valid_date(int(changed[:4]), int(changed[4:6]), int(changed[6:]))
        if date and date <= today and (today - date).days < 19 * 366:
            return date
    return None


class _Record:
    """A mutable draft of one record while corruptions are applied."""

    def __init__(self, person: Person):
        self.given = list(person.given_names)
        self.family = person.family_name
        self.preferred: str | None = None
        self.previous: list[str] = []
        self.dob = person.date_of_birth
        self.gender = person.gender
        self.address: Address | None = person.address
        self.nhs = person.nhs_number
        self.upn = person.pupil_number


def _corrupt(rng: random.Random, person: Person, draft: _Record, mix: Mix, today: dt.date) -> list[str]:
    applied: list[str] = []
    rates = mix.rates

    def hit(name: str) -> bool:
        return rng.random() < rates.get(name, 0.0)

    # Life events first: the record may be older or newer than the truth.
    if person.former_family_name:
        state = rng.choice(("stale", "new_with_previous", "new"))
        if state == "stale":
            draft.family = person.former_family_name
            applied.append("name_change_stale")
        elif state == "new_with_previous":
            draft.previous = [person.former_family_name]
            applied.append("name_change_with_previous")
        else:
            applied.append("name_change_unrecorded")
    if person.former_address is not None and rng.random() < 0.5:
        draft.address = person.former_address
        applied.append("moved")
    if len(draft.given) > 1 and hit("middle_dropped"):
        draft.given = draft.given[:1]
        applied.append("middle_dropped")
    if hit("nickname"):
        first = draft.given[0]
        options = list(NICKNAMES.get(first, ())) + _FORMAL_OF.get(first, [])
        if options:
            draft.given[0] = rng.choice(options)
            applied.append("nickname")
    if hit("preferred_name"):
        options = NICKNAMES.get(draft.given[0], ())
        if options:
            draft.preferred = rng.choice(options)
            applied.append("preferred_name")
    if hit("spelling_variant"):
        fields = [("given", draft.given[0])] if draft.given[0] in _VARIANTS_OF else []
        if draft.family in _VARIANTS_OF:
            fields.append(("family", draft.family))
        if fields:
            which, name = rng.choice(fields)
            variant = rng.choice(_VARIANTS_OF[name])
            if which == "given":
                draft.given[0] = variant
            else:
                draft.family = variant
            applied.append("spelling_variant")
    if hit("typo_given"):
        changed = typo(rng, draft.given[0])
        if changed != draft.given[0]:
            draft.given[0] = changed
            applied.append("typo_given")
    if hit("typo_family"):
        changed = typo(rng, draft.family)
        if changed != draft.family:
            draft.family = changed
            applied.append("typo_family")
    if hit("swap_names"):
        draft.given[0], draft.family = draft.family, draft.given[0]
        applied.append("swap_names")
    if hit("dob_swap_day_month") and draft.dob.day <= 12 and draft.dob.month <= 12 \
            and draft.dob.day != draft.dob.month:
        swapped = dt.date(draft.dob.year, draft.dob.day, draft.dob.month)
        if swapped <= today:
            draft.dob = swapped
            applied.append("dob_swap_day_month")
    if hit("dob_digit"):
        changed = _dob_digit(rng, draft.dob, today)
        if changed and changed != draft.dob:
            draft.dob = changed
            applied.append("dob_digit")
    if hit("dob_year"):
        year = draft.dob.year + rng.choice((-1, 1))
        changed = _valid_date(year, draft.dob.month, draft.dob.day) or _valid_date(year, draft.dob.month, 28)
        if changed and changed <= today:
            draft.dob = changed
            applied.append("dob_year")
    if draft.address is not None and hit("address_abbreviated"):
        lines = list(draft.address.lines)
        for long, short in _ABBREVIATIONS:
            lines = [line.replace(long, short) for line in lines]
        if len(lines) > 1 and rng.random() < 0.5:
            lines = [", ".join(lines)] if len(", ".join(lines)) <= 100 else lines
        if tuple(lines) != draft.address.lines:
            draft.address = dataclasses.replace(draft.address, lines=tuple(lines))
            applied.append("address_abbreviated")
    if draft.address is not None and hit("postcode_format"):
        pc = draft.address.postcode
        draft.address = dataclasses.replace(draft.address, postcode=rng.choice((pc.replace(" ", ""), pc.lower())))
        applied.append("postcode_format")
    if draft.address is not None and hit("missing_address"):
        draft.address = None
        applied.append("missing_address")
    if hit("gender_unknown"):
        draft.gender = "unknown"
        applied.append("gender_unknown")
    if hit("case_variant"):
        how = rng.choice((str.upper, str.lower))
        draft.family = how(draft.family)
        draft.given = [how(g) for g in draft.given]
        applied.append("case_variant")
    names = [draft.family, *draft.given, *draft.previous]
    if any(strip_diacritics(n) != n for n in names) and hit("diacritics_dropped"):
        draft.family = strip_diacritics(draft.family)
        draft.given = [strip_diacritics(g) for g in draft.given]
        draft.previous = [strip_diacritics(p) for p in draft.previous]
        applied.append("diacritics_dropped")
    if any(ch in n for n in names for ch in "-' ") and hit("punctuation_variant"):
        sep = rng.choice(("", " "))
        fix = lambda n: n.replace("-", sep).replace("'", rng.choice(("", " ", "’")))  # noqa: E731
        draft.family = fix(draft.family)
        draft.given = [fix(g) for g in draft.given]
        applied.append("punctuation_variant")
    return applied


def _source_id(rng: random.Random, org: OrgSpec, used: set[str]) -> str:
    while True:
        srid = f"{org.code.lower()}-{rng.randrange(10**9):09d}"
        if srid not in used:
            used.add(srid)
            return srid


def _involvement(rng: random.Random, org: OrgSpec, dob: dt.date, today: dt.date) -> Involvement:
    service, role = rng.choice(org.services)
    earliest = max(dob, today - dt.timedelta(days=3 * 365))
    start = earliest + dt.timedelta(days=rng.randrange(max(1, (today - earliest).days + 1)))
    practitioner = f"{_given(rng, 'british_irish', rng.choice(('female', 'male')))} " \
                   f"{_family_name(rng, 'british_irish')}"
    return Involvement(service=service, start=min(start, today), caf_assessment=rng.random() < 0.2,
                       lead_professional=rng.random() < 0.3, practitioner_name=practitioner, role=role,
                       phone=f"0113 496 {rng.randint(0, 9999):04d}")


def org_record(rng: random.Random, person: Person, org: OrgSpec, mix: Mix, today: dt.date,
               used_ids: set[str]) -> SourceRecord:
    """One organisation's record of ``person``, corrupted by ``mix``."""
    draft = _Record(person)
    applied = _corrupt(rng, person, draft, mix, today)
    nhs = draft.nhs if draft.nhs and rng.random() < mix.nhs_recorded.get(org.kind, 0.0) else None
    if nhs and rng.random() < mix.rates.get("missing_nhs", 0.0):
        nhs = None
        applied.append("missing_nhs")
    upn = draft.upn if draft.upn and rng.random() < mix.upn_recorded.get(org.kind, 0.0) else None
    if upn and rng.random() < mix.rates.get("missing_upn", 0.0):
        upn = None
        applied.append("missing_upn")
    identity = Identity(
        family_name=draft.family, given_names=tuple(draft.given), date_of_birth=draft.dob,
        gender=draft.gender, preferred_name=draft.preferred, previous_names=tuple(draft.previous),
        nhs_number=nhs, pupil_number=upn)
    carers = (Carer(name=person.carer_name, relationship=rng.choice(("mother", "father", "carer")),
                    phone=person.carer_phone),) if rng.random() < 0.7 else ()
    update = ChildUpdate(
        source_record_id=_source_id(rng, org, used_ids), identity=identity, address=draft.address,
        carers=carers,
        educational_setting=Setting(name=f"{rng.choice(_STREETS).split()[0]} Primary School",
                                    code=f"URN{rng.randint(100000, 149999)}")
        if org.kind == "education" else None,
        gp_practice=Setting(name=f"{rng.choice(_STREETS).split()[0]} Surgery",
                            code=f"{rng.choice('ABCDEFGHJKLMNP')}{rng.randint(81000, 89999)}")
        if org.kind == "health" else None,
        involvements=(_involvement(rng, org, person.date_of_birth, today),))
    return SourceRecord(person.person_id, update, tuple(applied))


def views(people: list[Person], org_count: int, seed: int, overlap: float = 0.8,
          mix: str | Mix = "default", *, today: dt.date | None = None) -> dict[str, list[SourceRecord]]:
    """What ``org_count`` organisations (2: LA and HEALTH; 3: and SCHOOL) hold of ``people``: each
    holds each child with probability ``overlap`` (the school only children of school age, 4 and
    over), in its own order, with its own record ids and corruptions."""
    if not 1 <= org_count <= len(ORGS):
        raise ValueError(f"org_count must be 1..{len(ORGS)}")
    mix = mix_named(mix)
    today = today or dt.date.today()
    out: dict[str, list[SourceRecord]] = {}
    for org in ORGS[:org_count]:
        rng = random.Random(f"views/{seed}/{org.code}")
        used: set[str] = set()
        held = []
        for person in people:
            if org.school_age_only and (today - person.date_of_birth).days < 4 * 365:
                continue
            if rng.random() < overlap:
                held.append(org_record(rng, person, org, mix, today, used))
        rng.shuffle(held)  # each organisation sends in its own order
        out[org.code] = held
    return out


# ---- output -------------------------------------------------------------------------------------

def write_jsonl(records: Iterable[ChildUpdate | SourceRecord], path: str | Path, *, with_truth: bool = False) -> int:
    """One stored-record JSON (``ChildUpdate.record()``) per line. With ``with_truth`` each line is
    ``{"person_id", "source_record_id", "corruptions", "record"}`` instead (for a labelled set).
    Returns the number of lines written."""
    count = 0
    with open(path, "w", encoding="utf-8") as out:
        for item in records:
            update = item.update if isinstance(item, SourceRecord) else item
            if with_truth:
                if not isinstance(item, SourceRecord):
                    raise TypeError("with_truth needs SourceRecord items")
                line = {"person_id": item.person_id, "source_record_id": update.source_record_id,
                        "corruptions": list(item.corruptions), "record": update.record()}
            else:
                line = update.record()
            out.write(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")
            count += 1
    return count


def summary(people: list[Person]) -> dict:
    """Counts that describe a population (for reports)."""
    families = {p.family_id for p in people}
    twins = sum(1 for p in people if p.twin_id) // 2
    return {"people": len(people), "families": len(families), "twin_pairs": twins,
            "with_nhs": sum(1 for p in people if p.nhs_number),
            "with_upn": sum(1 for p in people if p.pupil_number),
            "name_changed": sum(1 for p in people if p.former_family_name),
            "moved": sum(1 for p in people if p.former_address),
            "distinct_family_names": len({p.family_name for p in people}),
            "top_family_share": max((sum(1 for p in people if p.family_name == n) for n in
                                     {p.family_name for p in people}), default=0) / max(1, len(people))}


if __name__ == "__main__":  # a quick look: python -m bench.population
    import sys

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    pop = generate(size, seed=1)
    print(json.dumps(summary(pop), indent=1))
    for org, records in views(pop, 3, seed=1).items():
        for record in records[:5]:
            i = record.update.identity
            print(org, record.person_id, i.given_names, i.family_name, i.date_of_birth, i.gender,
                  record.update.address and record.update.address.postcode, i.nhs_number, i.pupil_number,
                  record.corruptions)
