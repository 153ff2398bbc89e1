"""The built-in offline dataset: four synthetic databases in Spider's layout.

Everything here is made up by this module (names are drawn from small invented
lists; no real personal data), deterministically from a seed. Run
``python -m text2sql.data.sample data/sample`` to rebuild ``data/sample/``.

Questions come from templates that cover filters, counts, aggregates, GROUP BY,
ORDER BY/LIMIT and JOINs along foreign keys; each template has a few phrasings.
The dev split holds questions whose text never occurs in the train split.

``python -m text2sql.data.sample --conversations data/sample-sparc`` writes the
multi-turn sample in SParC's layout: conversations of 2-4 turns on the same four
databases (a first question, then refine a filter, add a condition, switch to a
count or an order), with dev conversations whose text never occurs in train.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from text2sql.io import atomic_path, write_json

FIRST = ["Ada", "Bruno", "Chen", "Dalia", "Emil", "Farah", "Goran", "Hana", "Ivo", "Jana", "Kofi",
         "Lena", "Mateo", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tara", "Uma", "Viktor",
         "Wren", "Yusuf", "Zoe"]
LAST = ["Abara", "Berg", "Costa", "Dumas", "Ekwueme", "Falk", "Grieve", "Holt", "Ibsen", "Juarez",
        "Kovac", "Lind", "Moreau", "Novak", "Okafor", "Petrov", "Quist", "Rahman", "Sato", "Toivonen"]
CITIES = ["Avonlea", "Brightwater", "Cedarfield", "Dunmore", "Eastwick", "Fairhaven", "Glenrock"]


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: list[tuple[str, str]]  # (name, SQL type)
    primary_key: list[str]
    foreign_keys: list[tuple[str, str, str]]  # (column, ref_table, ref_column)


@dataclass(frozen=True)
class Template:
    phrasings: list[str]  # str.format templates over the slot values
    sql: str
    slots: Callable[[random.Random, dict[str, list[tuple]]], dict[str, Any]] | None = None


def _people(rng: random.Random, n: int) -> list[str]:
    pairs = [f"{f} {l}" for f in FIRST for l in LAST]
    return rng.sample(pairs, n)


def _school(rng: random.Random) -> tuple[list[TableSpec], dict[str, list[tuple]]]:
    tables = [
        TableSpec("teachers", [("teacher_id", "integer"), ("name", "text"), ("department", "text")],
                  ["teacher_id"], []),
        TableSpec("courses", [("course_id", "integer"), ("title", "text"), ("teacher_id", "integer"),
                              ("credits", "integer")],
                  ["course_id"], [("teacher_id", "teachers", "teacher_id")]),
        TableSpec("students", [("student_id", "integer"), ("name", "text"), ("year", "integer"),
                               ("city", "text")], ["student_id"], []),
        TableSpec("grades", [("grade", "text"), ("points", "real"), ("description", "text")],
                  ["grade"], []),
        TableSpec("enrollments", [("enrollment_id", "integer"), ("student_id", "integer"),
                                  ("course_id", "integer"), ("grade", "text")], ["enrollment_id"],
                  [("student_id", "students", "student_id"), ("course_id", "courses", "course_id"),
                   ("grade", "grades", "grade")]),
    ]
    depts = ["Mathematics", "Physics", "History", "Biology", "Literature"]
    titles = ["Algebra", "Geometry", "Mechanics", "Optics", "Ancient History", "Modern History",
              "Genetics", "Ecology", "Poetry", "Drama", "Statistics", "Astronomy"]
    dept_of = {"Algebra": 0, "Geometry": 0, "Statistics": 0, "Mechanics": 1, "Optics": 1,
               "Astronomy": 1, "Ancient History": 2, "Modern History": 2, "Genetics": 3,
               "Ecology": 3, "Poetry": 4, "Drama": 4}
    teacher_names = _people(rng, 10)
    teachers = [(i + 1, n, depts[i % len(depts)]) for i, n in enumerate(teacher_names)]
    courses = []
    for i, t in enumerate(titles):
        cands = [x for x in teachers if x[2] == depts[dept_of[t]]]
        courses.append((i + 1, t, rng.choice(cands)[0], rng.choice([2, 3, 4, 5])))
    students = [(i + 1, n, rng.randint(1, 4), rng.choice(CITIES))
                for i, n in enumerate(_people(rng, 40))]
    grades = [("A", 4.0, "excellent"), ("B", 3.0, "good"), ("C", 2.0, "satisfactory"),
              ("D", 1.0, "poor"), ("F", 0.0, "fail")]
    enrollments, eid = [], 1
    for s in students:
        for c in rng.sample(courses, rng.randint(2, 5)):
            enrollments.append((eid, s[0], c[0], rng.choices("ABCDF", [3, 4, 3, 1, 1])[0]))
            eid += 1
    rows = {"teachers": teachers, "courses": courses, "students": students, "grades": grades,
            "enrollments": enrollments}
    return tables, rows


def _library(rng: random.Random) -> tuple[list[TableSpec], dict[str, list[tuple]]]:
    tables = [
        TableSpec("authors", [("author_id", "integer"), ("name", "text"), ("country", "text")],
                  ["author_id"], []),
        TableSpec("books", [("book_id", "integer"), ("title", "text"), ("author_id", "integer"),
                            ("genre", "text"), ("published_year", "integer"), ("pages", "integer")],
                  ["book_id"], [("author_id", "authors", "author_id")]),
        TableSpec("members", [("member_id", "integer"), ("name", "text"), ("city", "text"),
                              ("joined_year", "integer")], ["member_id"], []),
        TableSpec("loans", [("loan_id", "integer"), ("book_id", "integer"), ("member_id", "integer"),
                            ("loan_date", "text"), ("returned", "integer")], ["loan_id"],
                  [("book_id", "books", "book_id"), ("member_id", "members", "member_id")]),
    ]
    countries = ["Norland", "Estavia", "Maravia", "Pelland", "Sorvia"]
    authors = [(i + 1, n, rng.choice(countries)) for i, n in enumerate(_people(rng, 15))]
    words = ["River", "Stone", "Winter", "Glass", "Harbor", "Lantern", "Orchard", "Silent",
             "Copper", "Garden", "Mirror", "Northern", "Paper", "Shadow", "Summer"]
    nouns = ["Song", "Map", "House", "Road", "Letters", "Clock", "Bridge", "Tide"]
    titles = sorted({f"The {a} {b}" for a in words for b in nouns})
    genres = ["mystery", "poetry", "science", "history", "fantasy"]
    books = [(i + 1, t, rng.choice(authors)[0], rng.choice(genres), rng.randint(1950, 2023),
              rng.randint(90, 700)) for i, t in enumerate(rng.sample(titles, 40))]
    members = [(i + 1, n, rng.choice(CITIES), rng.randint(2010, 2024))
               for i, n in enumerate(_people(rng, 30))]
    loans = [(i + 1, rng.choice(books)[0], rng.choice(members)[0],
              f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}", rng.randint(0, 1))
             for i in range(120)]
    return tables, {"authors": authors, "books": books, "members": members, "loans": loans}


def _shop(rng: random.Random) -> tuple[list[TableSpec], dict[str, list[tuple]]]:
    tables = [
        TableSpec("customers", [("customer_id", "integer"), ("name", "text"), ("city", "text")],
                  ["customer_id"], []),
        TableSpec("products", [("product_id", "integer"), ("name", "text"), ("category", "text"),
                               ("price", "real")], ["product_id"], []),
        TableSpec("orders", [("order_id", "integer"), ("customer_id", "integer"),
                             ("order_date", "text"), ("status", "text")], ["order_id"],
                  [("customer_id", "customers", "customer_id")]),
        TableSpec("order_items", [("order_id", "integer"), ("product_id", "integer"),
                                  ("quantity", "integer")], ["order_id", "product_id"],
                  [("order_id", "orders", "order_id"), ("product_id", "products", "product_id")]),
    ]
    customers = [(i + 1, n, rng.choice(CITIES)) for i, n in enumerate(_people(rng, 30))]
    cats = {"kitchen": ["Kettle", "Toaster", "Blender", "Pan", "Knife Set"],
            "garden": ["Rake", "Hose", "Shovel", "Planter"],
            "office": ["Desk Lamp", "Stapler", "Notebook", "Chair", "Monitor Stand"],
            "toys": ["Puzzle", "Kite", "Robot Kit", "Yo-yo"]}
    products, pid = [], 1
    for cat, names in cats.items():
        for n in names:
            products.append((pid, n, cat, round(rng.uniform(3, 120), 2)))
            pid += 1
    statuses = ["shipped", "pending", "cancelled", "delivered"]
    orders = [(i + 1, rng.choice(customers)[0],
               f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}", rng.choice(statuses))
              for i in range(80)]
    items = []
    for o in orders:
        for p in rng.sample(products, rng.randint(1, 3)):
            items.append((o[0], p[0], rng.randint(1, 6)))
    return tables, {"customers": customers, "products": products, "orders": orders,
                    "order_items": items}


def _clinic(rng: random.Random) -> tuple[list[TableSpec], dict[str, list[tuple]]]:
    tables = [
        TableSpec("doctors", [("doctor_id", "integer"), ("name", "text"), ("specialty", "text")],
                  ["doctor_id"], []),
        TableSpec("patients", [("patient_id", "integer"), ("name", "text"), ("birth_year", "integer"),
                               ("city", "text")], ["patient_id"], []),
        TableSpec("appointments", [("appointment_id", "integer"), ("doctor_id", "integer"),
                                   ("patient_id", "integer"), ("visit_date", "text"),
                                   ("fee", "real")], ["appointment_id"],
                  [("doctor_id", "doctors", "doctor_id"), ("patient_id", "patients", "patient_id")]),
    ]
    specs = ["cardiology", "dermatology", "pediatrics", "neurology", "oncology"]
    doctors = [(i + 1, n, specs[i % len(specs)]) for i, n in enumerate(_people(rng, 12))]
    patients = [(i + 1, n, rng.randint(1940, 2020), rng.choice(CITIES))
                for i, n in enumerate(_people(rng, 40))]
    appts = [(i + 1, rng.choice(doctors)[0], rng.choice(patients)[0],
              f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
              float(rng.choice([40, 60, 80, 120, 150]))) for i in range(120)]
    return tables, {"doctors": doctors, "patients": patients, "appointments": appts}


def _col(rows: dict[str, list[tuple]], table: str, index: int) -> list[Any]:
    return sorted({r[index] for r in rows[table]}, key=str)


def _pick(table: str, index: int, slot: str):
    return lambda rng, rows: {slot: rng.choice(_col(rows, table, index))}


def _pick_n(slot: str, lo: int, hi: int):
    return lambda rng, rows: {slot: rng.randint(lo, hi)}


def _both(*fns):
    def f(rng, rows):
        out: dict[str, Any] = {}
        for fn in fns:
            out.update(fn(rng, rows))
        return out
    return f


TEMPLATES: dict[str, list[Template]] = {
    "school": [
        Template(["Which students got an {grade}?", "List the names of students who received a grade of {grade}.",
                  "Show the students with an {grade} grade."],
                 "SELECT DISTINCT T1.name FROM students AS T1 JOIN enrollments AS T2 ON T1.student_id = T2.student_id WHERE T2.grade = '{grade}'",
                 _pick("grades", 0, "grade")),
        Template(["Who is the teacher of {title}?", "Which teacher teaches the course {title}?",
                  "Name the teacher of the {title} course."],
                 "SELECT T1.name FROM teachers AS T1 JOIN courses AS T2 ON T1.teacher_id = T2.teacher_id WHERE T2.title = '{title}'",
                 _pick("courses", 1, "title")),
        Template(["How many students are there?", "Count the students.", "What is the number of students?"],
                 "SELECT count(*) FROM students"),
        Template(["How many students live in {city}?", "Count the students from {city}.",
                  "What is the number of students in {city}?"],
                 "SELECT count(*) FROM students WHERE city = '{city}'", _pick("students", 3, "city")),
        Template(["List the students in year {year}.", "Which students are in year {year}?",
                  "Show the names of year {year} students."],
                 "SELECT name FROM students WHERE year = {year}", _pick("students", 2, "year")),
        Template(["Which courses does {name} teach?", "List the titles of courses taught by {name}.",
                  "What courses are taught by {name}?"],
                 "SELECT T2.title FROM teachers AS T1 JOIN courses AS T2 ON T1.teacher_id = T2.teacher_id WHERE T1.name = '{name}'",
                 _pick("teachers", 1, "name")),
        Template(["How many courses does each department offer?", "Count the courses per department.",
                  "For each department, how many courses are there?"],
                 "SELECT T1.department, count(*) FROM teachers AS T1 JOIN courses AS T2 ON T1.teacher_id = T2.teacher_id GROUP BY T1.department"),
        Template(["Which courses have more than {n} credits?", "List the courses worth more than {n} credits.",
                  "Show the titles of courses with over {n} credits."],
                 "SELECT title FROM courses WHERE credits > {n}", _pick_n("n", 2, 4)),
        Template(["What is the average grade points of {name}?", "Give the mean grade points of student {name}.",
                  "What are the average points {name} earned?"],
                 "SELECT avg(T3.points) FROM students AS T1 JOIN enrollments AS T2 ON T1.student_id = T2.student_id JOIN grades AS T3 ON T2.grade = T3.grade WHERE T1.name = '{name}'",
                 _pick("students", 1, "name")),
        Template(["How many students are enrolled in {title}?", "Count the students taking {title}.",
                  "What is the number of enrollments in {title}?"],
                 "SELECT count(*) FROM enrollments AS T1 JOIN courses AS T2 ON T1.course_id = T2.course_id WHERE T2.title = '{title}'",
                 _pick("courses", 1, "title")),
        Template(["Which {n} courses have the most credits?", "List the top {n} courses by credits.",
                  "Show the {n} courses with the highest credits."],
                 "SELECT title FROM courses ORDER BY credits DESC LIMIT {n}", _pick_n("n", 1, 5)),
        Template(["Which courses is {name} enrolled in?", "List the courses taken by {name}.",
                  "What courses does student {name} take?"],
                 "SELECT T3.title FROM students AS T1 JOIN enrollments AS T2 ON T1.student_id = T2.student_id JOIN courses AS T3 ON T2.course_id = T3.course_id WHERE T1.name = '{name}'",
                 _pick("students", 1, "name")),
        Template(["Which students in year {year} live in {city}?", "List the year {year} students from {city}.",
                  "Show the names of students from {city} who are in year {year}."],
                 "SELECT name FROM students WHERE year = {year} AND city = '{city}'",
                 _both(_pick("students", 2, "year"), _pick("students", 3, "city"))),
        Template(["How many students got a {grade} in {title}?", "Count the {grade} grades given in {title}.",
                  "What is the number of students with grade {grade} in {title}?"],
                 "SELECT count(*) FROM enrollments AS T1 JOIN courses AS T2 ON T1.course_id = T2.course_id WHERE T2.title = '{title}' AND T1.grade = '{grade}'",
                 _both(_pick("grades", 0, "grade"), _pick("courses", 1, "title"))),
    ],
    "library": [
        Template(["How many books are there?", "Count the books.", "What is the total number of books?"],
                 "SELECT count(*) FROM books"),
        Template(["Which books were written by {name}?", "List the titles of books by {name}.",
                  "Show the books whose author is {name}."],
                 "SELECT T2.title FROM authors AS T1 JOIN books AS T2 ON T1.author_id = T2.author_id WHERE T1.name = '{name}'",
                 _pick("authors", 1, "name")),
        Template(["Who wrote {title}?", "Who is the author of {title}?", "Name the author of the book {title}."],
                 "SELECT T1.name FROM authors AS T1 JOIN books AS T2 ON T1.author_id = T2.author_id WHERE T2.title = '{title}'",
                 _pick("books", 1, "title")),
        Template(["List the {genre} books.", "Which books are in the {genre} genre?",
                  "Show the titles of {genre} books."],
                 "SELECT title FROM books WHERE genre = '{genre}'", _pick("books", 3, "genre")),
        Template(["How many books were published after {year}?", "Count the books published after {year}.",
                  "What is the number of books from after {year}?"],
                 "SELECT count(*) FROM books WHERE published_year > {year}", _pick_n("year", 1960, 2020)),
        Template(["How many books are there in each genre?", "Count the books per genre.",
                  "For each genre, give the number of books."],
                 "SELECT genre, count(*) FROM books GROUP BY genre"),
        Template(["What is the average number of pages of {genre} books?",
                  "Give the mean page count of {genre} books.", "On average, how many pages do {genre} books have?"],
                 "SELECT avg(pages) FROM books WHERE genre = '{genre}'", _pick("books", 3, "genre")),
        Template(["Which members live in {city}?", "List the members from {city}.",
                  "Show the names of members in {city}."],
                 "SELECT name FROM members WHERE city = '{city}'", _pick("members", 2, "city")),
        Template(["What are the {n} longest books?", "List the {n} books with the most pages.",
                  "Show the top {n} books by page count."],
                 "SELECT title FROM books ORDER BY pages DESC LIMIT {n}", _pick_n("n", 1, 5)),
        Template(["How many loans has {name} made?", "Count the loans of member {name}.",
                  "What is the number of books borrowed by {name}?"],
                 "SELECT count(*) FROM members AS T1 JOIN loans AS T2 ON T1.member_id = T2.member_id WHERE T1.name = '{name}'",
                 _pick("members", 1, "name")),
        Template(["Which books has {name} borrowed?", "List the titles borrowed by {name}.",
                  "Show the books loaned to {name}."],
                 "SELECT T3.title FROM members AS T1 JOIN loans AS T2 ON T1.member_id = T2.member_id JOIN books AS T3 ON T2.book_id = T3.book_id WHERE T1.name = '{name}'",
                 _pick("members", 1, "name")),
        Template(["How many authors come from {country}?", "Count the authors from {country}.",
                  "What is the number of authors whose country is {country}?"],
                 "SELECT count(*) FROM authors WHERE country = '{country}'", _pick("authors", 2, "country")),
        Template(["Which {genre} books were published after {year}?", "List the {genre} books published after {year}.",
                  "Show the titles of {genre} books from after {year}."],
                 "SELECT title FROM books WHERE genre = '{genre}' AND published_year > {year}",
                 _both(_pick("books", 3, "genre"), _pick_n("year", 1960, 2020))),
        Template(["How many members from {city} joined after {year}?", "Count the members in {city} who joined after {year}.",
                  "What is the number of {city} members that joined after {year}?"],
                 "SELECT count(*) FROM members WHERE city = '{city}' AND joined_year > {year}",
                 _both(_pick("members", 2, "city"), _pick_n("year", 2010, 2023))),
    ],
    "shop": [
        Template(["How many customers are there?", "Count the customers.", "What is the number of customers?"],
                 "SELECT count(*) FROM customers"),
        Template(["Which products cost more than {n} dollars?", "List the products priced above {n}.",
                  "Show the names of products with a price over {n}."],
                 "SELECT name FROM products WHERE price > {n}", _pick_n("n", 10, 100)),
        Template(["List the {category} products.", "Which products are in the {category} category?",
                  "Show the names of {category} products."],
                 "SELECT name FROM products WHERE category = '{category}'", _pick("products", 2, "category")),
        Template(["What is the average price of {category} products?", "Give the mean price of {category} products.",
                  "On average, what do {category} products cost?"],
                 "SELECT avg(price) FROM products WHERE category = '{category}'", _pick("products", 2, "category")),
        Template(["How many products are in each category?", "Count the products per category.",
                  "For each category, give the number of products."],
                 "SELECT category, count(*) FROM products GROUP BY category"),
        Template(["How many orders has {name} placed?", "Count the orders of {name}.",
                  "What is the number of orders made by {name}?"],
                 "SELECT count(*) FROM customers AS T1 JOIN orders AS T2 ON T1.customer_id = T2.customer_id WHERE T1.name = '{name}'",
                 _pick("customers", 1, "name")),
        Template(["How many orders are {status}?", "Count the {status} orders.", "What is the number of {status} orders?"],
                 "SELECT count(*) FROM orders WHERE status = '{status}'", _pick("orders", 3, "status")),
        Template(["What are the {n} most expensive products?", "List the {n} priciest products.",
                  "Show the top {n} products by price."],
                 "SELECT name FROM products ORDER BY price DESC LIMIT {n}", _pick_n("n", 1, 5)),
        Template(["Which customers live in {city}?", "List the customers from {city}.",
                  "Show the names of customers in {city}."],
                 "SELECT name FROM customers WHERE city = '{city}'", _pick("customers", 2, "city")),
        Template(["Which products did {name} order?", "List the products bought by {name}.",
                  "Show the names of products ordered by {name}."],
                 "SELECT DISTINCT T4.name FROM customers AS T1 JOIN orders AS T2 ON T1.customer_id = T2.customer_id JOIN order_items AS T3 ON T2.order_id = T3.order_id JOIN products AS T4 ON T3.product_id = T4.product_id WHERE T1.name = '{name}'",
                 _pick("customers", 1, "name")),
        Template(["What is the total quantity ordered of {product}?", "How many units of {product} were ordered in total?",
                  "Give the total ordered quantity of {product}."],
                 "SELECT sum(T1.quantity) FROM order_items AS T1 JOIN products AS T2 ON T1.product_id = T2.product_id WHERE T2.name = '{product}'",
                 _pick("products", 1, "product")),
        Template(["How many orders does each customer city have?", "Count the orders per customer city.",
                  "For each city, how many orders did its customers place?"],
                 "SELECT T1.city, count(*) FROM customers AS T1 JOIN orders AS T2 ON T1.customer_id = T2.customer_id GROUP BY T1.city"),
        Template(["Which {category} products cost less than {n}?", "List the {category} products priced below {n}.",
                  "Show the names of {category} products cheaper than {n}."],
                 "SELECT name FROM products WHERE category = '{category}' AND price < {n}",
                 _both(_pick("products", 2, "category"), _pick_n("n", 10, 100))),
        Template(["How many {status} orders does {name} have?", "Count the {status} orders of {name}.",
                  "What is the number of {status} orders placed by {name}?"],
                 "SELECT count(*) FROM customers AS T1 JOIN orders AS T2 ON T1.customer_id = T2.customer_id WHERE T1.name = '{name}' AND T2.status = '{status}'",
                 _both(_pick("customers", 1, "name"), _pick("orders", 3, "status"))),
    ],
    "clinic": [
        Template(["How many doctors are there?", "Count the doctors.", "What is the number of doctors?"],
                 "SELECT count(*) FROM doctors"),
        Template(["Which doctors specialize in {specialty}?", "List the {specialty} doctors.",
                  "Show the names of doctors whose specialty is {specialty}."],
                 "SELECT name FROM doctors WHERE specialty = '{specialty}'", _pick("doctors", 2, "specialty")),
        Template(["How many patients were born after {year}?", "Count the patients born after {year}.",
                  "What is the number of patients with a birth year after {year}?"],
                 "SELECT count(*) FROM patients WHERE birth_year > {year}", _pick_n("year", 1945, 2015)),
        Template(["Which patients live in {city}?", "List the patients from {city}.",
                  "Show the names of patients in {city}."],
                 "SELECT name FROM patients WHERE city = '{city}'", _pick("patients", 3, "city")),
        Template(["How many appointments does {name} have?", "Count the appointments of doctor {name}.",
                  "What is the number of visits with {name}?"],
                 "SELECT count(*) FROM doctors AS T1 JOIN appointments AS T2 ON T1.doctor_id = T2.doctor_id WHERE T1.name = '{name}'",
                 _pick("doctors", 1, "name")),
        Template(["What is the total fee paid by {name}?", "How much has patient {name} paid in fees?",
                  "Give the sum of fees for {name}."],
                 "SELECT sum(T2.fee) FROM patients AS T1 JOIN appointments AS T2 ON T1.patient_id = T2.patient_id WHERE T1.name = '{name}'",
                 _pick("patients", 1, "name")),
        Template(["How many doctors are there in each specialty?", "Count the doctors per specialty.",
                  "For each specialty, give the number of doctors."],
                 "SELECT specialty, count(*) FROM doctors GROUP BY specialty"),
        Template(["What is the average appointment fee?", "Give the mean fee of appointments.",
                  "On average, what does an appointment cost?"],
                 "SELECT avg(fee) FROM appointments"),
        Template(["Which doctors has {name} visited?", "List the doctors seen by patient {name}.",
                  "Show the names of doctors that {name} had appointments with."],
                 "SELECT DISTINCT T3.name FROM patients AS T1 JOIN appointments AS T2 ON T1.patient_id = T2.patient_id JOIN doctors AS T3 ON T2.doctor_id = T3.doctor_id WHERE T1.name = '{name}'",
                 _pick("patients", 1, "name")),
        Template(["Who are the {n} oldest patients?", "List the {n} patients with the earliest birth year.",
                  "Show the {n} oldest patients."],
                 "SELECT name FROM patients ORDER BY birth_year ASC LIMIT {n}", _pick_n("n", 1, 5)),
        Template(["How many appointments cost more than {n}?", "Count the appointments with a fee above {n}.",
                  "What is the number of appointments whose fee exceeds {n}?"],
                 "SELECT count(*) FROM appointments WHERE fee > {n}", _pick_n("n", 30, 140)),
        Template(["What is the specialty of {name}?", "Which specialty does doctor {name} have?",
                  "Give the specialty of {name}."],
                 "SELECT specialty FROM doctors WHERE name = '{name}'", _pick("doctors", 1, "name")),
        Template(["Which patients from {city} were born before {year}?", "List the patients in {city} born before {year}.",
                  "Show the names of {city} patients with a birth year before {year}."],
                 "SELECT name FROM patients WHERE city = '{city}' AND birth_year < {year}",
                 _both(_pick("patients", 3, "city"), _pick_n("year", 1945, 2015))),
        Template(["How many {specialty} appointments cost more than {n}?", "Count the {specialty} visits with a fee above {n}.",
                  "What is the number of {specialty} appointments whose fee exceeds {n}?"],
                 "SELECT count(*) FROM doctors AS T1 JOIN appointments AS T2 ON T1.doctor_id = T2.doctor_id WHERE T1.specialty = '{specialty}' AND T2.fee > {n}",
                 _both(_pick("doctors", 2, "specialty"), _pick_n("n", 30, 140))),
    ],
}


@dataclass(frozen=True)
class Chain:
    """A conversation's turns, each (phrasings, SQL) over one shared set of slot values."""

    turns: list[tuple[list[str], str]]
    slots: Callable[[random.Random, dict[str, list[tuple]]], dict[str, Any]]


_STUDENTS_YEAR = "SELECT name FROM students WHERE year = {year}"
_SCHOOL_ENROLLED = ("FROM students AS T1 JOIN enrollments AS T2 ON T1.student_id = T2.student_id "
                    "JOIN courses AS T3 ON T2.course_id = T3.course_id WHERE T1.name = '{name}'")
_BOOKS_BY = ("FROM authors AS T1 JOIN books AS T2 ON T1.author_id = T2.author_id "
             "WHERE T1.name = '{name}'")
_ORDERS_FROM = ("FROM customers AS T1 JOIN orders AS T2 ON T1.customer_id = T2.customer_id "
                "WHERE T1.city = '{city}'")
_VISITS_OF = ("FROM doctors AS T1 JOIN appointments AS T2 ON T1.doctor_id = T2.doctor_id "
              "WHERE T1.specialty = '{specialty}'")

CHAINS: dict[str, list[Chain]] = {
    "school": [
        Chain([(["Which students are in year {year}?", "List the students in year {year}."],
                _STUDENTS_YEAR),
               (["Only those from {city}.", "Just the ones living in {city}."],
                _STUDENTS_YEAR + " AND city = '{city}'"),
               (["How many is that?", "Count them."],
                "SELECT count(*) FROM students WHERE year = {year} AND city = '{city}'"),
               (["Show their names in alphabetical order.", "List them sorted by name."],
                _STUDENTS_YEAR + " AND city = '{city}' ORDER BY name")],
              _both(_pick("students", 2, "year"), _pick("students", 3, "city"))),
        Chain([(["Which courses have more than {n} credits?",
                 "List the courses worth more than {n} credits."],
                "SELECT title FROM courses WHERE credits > {n}"),
               (["Order them by credits, highest first.", "Sort them by credits, most first."],
                "SELECT title FROM courses WHERE credits > {n} ORDER BY credits DESC"),
               (["Show only the top {k}.", "Keep just the first {k}."],
                "SELECT title FROM courses WHERE credits > {n} ORDER BY credits DESC LIMIT {k}")],
              _both(_pick_n("n", 2, 4), _pick_n("k", 1, 3))),
        Chain([(["Which courses is {name} enrolled in?", "List the courses taken by {name}."],
                "SELECT T3.title " + _SCHOOL_ENROLLED),
               (["How many are there?", "How many courses is that?"],
                "SELECT count(*) " + _SCHOOL_ENROLLED),
               (["What is the total of their credits?", "Add up their credits."],
                "SELECT sum(T3.credits) " + _SCHOOL_ENROLLED)],
              _pick("students", 1, "name")),
    ],
    "library": [
        Chain([(["List the {genre} books.", "Which books are in the {genre} genre?"],
                "SELECT title FROM books WHERE genre = '{genre}'"),
               (["Only those published after {year}.", "Just the ones from after {year}."],
                "SELECT title FROM books WHERE genre = '{genre}' AND published_year > {year}"),
               (["How many are there?", "Count them."],
                "SELECT count(*) FROM books WHERE genre = '{genre}' AND published_year > {year}"),
               (["What is their average number of pages?", "How many pages do they have on average?"],
                "SELECT avg(pages) FROM books WHERE genre = '{genre}' AND published_year > {year}")],
              _both(_pick("books", 3, "genre"), _pick_n("year", 1960, 2020))),
        Chain([(["Which members live in {city}?", "List the members from {city}."],
                "SELECT name FROM members WHERE city = '{city}'"),
               (["Only those who joined after {year}.", "Just the ones that joined after {year}."],
                "SELECT name FROM members WHERE city = '{city}' AND joined_year > {year}"),
               (["How many is that?", "Count them."],
                "SELECT count(*) FROM members WHERE city = '{city}' AND joined_year > {year}")],
              _both(_pick("members", 2, "city"), _pick_n("year", 2010, 2023))),
        Chain([(["Which books were written by {name}?", "List the books by {name}."],
                "SELECT T2.title " + _BOOKS_BY),
               (["Sort them by pages, longest first.", "Order them from the longest."],
                "SELECT T2.title " + _BOOKS_BY + " ORDER BY T2.pages DESC"),
               (["Just the first one.", "Only the longest."],
                "SELECT T2.title " + _BOOKS_BY + " ORDER BY T2.pages DESC LIMIT 1")],
              _pick("authors", 1, "name")),
    ],
    "shop": [
        Chain([(["List the {category} products.", "Which products are in the {category} category?"],
                "SELECT name FROM products WHERE category = '{category}'"),
               (["Only those cheaper than {n}.", "Just the ones priced below {n}."],
                "SELECT name FROM products WHERE category = '{category}' AND price < {n}"),
               (["Sort them by price.", "Order them from the cheapest."],
                "SELECT name FROM products WHERE category = '{category}' AND price < {n} "
                "ORDER BY price"),
               (["How many are there?", "Count them."],
                "SELECT count(*) FROM products WHERE category = '{category}' AND price < {n}")],
              _both(_pick("products", 2, "category"), _pick_n("n", 10, 100))),
        Chain([(["Which customers live in {city}?", "List the customers from {city}."],
                "SELECT name FROM customers WHERE city = '{city}'"),
               (["How many orders did they place?", "Count their orders."],
                "SELECT count(*) " + _ORDERS_FROM),
               (["Only the {status} ones.", "Just those that are {status}."],
                "SELECT count(*) " + _ORDERS_FROM + " AND T2.status = '{status}'")],
              _both(_pick("customers", 2, "city"), _pick("orders", 3, "status"))),
        Chain([(["What are the {n} most expensive products?", "List the {n} priciest products."],
                "SELECT name FROM products ORDER BY price DESC LIMIT {n}"),
               (["Show their prices too.", "Add their prices."],
                "SELECT name, price FROM products ORDER BY price DESC LIMIT {n}")],
              _pick_n("n", 1, 5)),
    ],
    "clinic": [
        Chain([(["Which patients live in {city}?", "List the patients from {city}."],
                "SELECT name FROM patients WHERE city = '{city}'"),
               (["Only those born before {year}.", "Just the ones born before {year}."],
                "SELECT name FROM patients WHERE city = '{city}' AND birth_year < {year}"),
               (["How many is that?", "Count them."],
                "SELECT count(*) FROM patients WHERE city = '{city}' AND birth_year < {year}"),
               (["List their names from oldest to youngest.", "Show them, oldest first."],
                "SELECT name FROM patients WHERE city = '{city}' AND birth_year < {year} "
                "ORDER BY birth_year")],
              _both(_pick("patients", 3, "city"), _pick_n("year", 1945, 2015))),
        Chain([(["Which doctors specialize in {specialty}?", "List the {specialty} doctors."],
                "SELECT name FROM doctors WHERE specialty = '{specialty}'"),
               (["How many appointments do they have?", "Count their appointments."],
                "SELECT count(*) " + _VISITS_OF),
               (["Only those costing more than {n}.", "Just the ones with a fee above {n}."],
                "SELECT count(*) " + _VISITS_OF + " AND T2.fee > {n}"),
               (["What is their average fee?", "What do they cost on average?"],
                "SELECT avg(T2.fee) " + _VISITS_OF + " AND T2.fee > {n}")],
              _both(_pick("doctors", 2, "specialty"), _pick_n("n", 30, 140))),
    ],
}

BUILDERS = {"school": _school, "library": _library, "shop": _shop, "clinic": _clinic}


def _write_db(path: Path, specs: list[TableSpec], rows: dict[str, list[tuple]]) -> None:
    with atomic_path(path) as tmp:
        tmp.unlink()
        conn = sqlite3.connect(tmp)
        for t in specs:
            cols = [f"{c} {ty}" for c, ty in t.columns]
            cols.append(f"PRIMARY KEY ({', '.join(t.primary_key)})")
            cols += [f"FOREIGN KEY ({c}) REFERENCES {rt}({rc})" for c, rt, rc in t.foreign_keys]
            conn.execute(f"CREATE TABLE {t.name} ({', '.join(cols)})")
            marks = ", ".join("?" * len(t.columns))
            conn.executemany(f"INSERT INTO {t.name} VALUES ({marks})", rows[t.name])
        conn.commit()
        conn.close()


def _tables_entry(db_id: str, specs: list[TableSpec]) -> dict[str, Any]:
    cols: list[list[Any]] = [[-1, "*"]]
    types = ["text"]
    index: dict[tuple[str, str], int] = {}
    for ti, t in enumerate(specs):
        for c, ty in t.columns:
            index[(t.name, c)] = len(cols)
            cols.append([ti, c])
            types.append("number" if ty in ("integer", "real") else "text")
    pks = [index[(t.name, t.primary_key[0])] if len(t.primary_key) == 1
           else [index[(t.name, c)] for c in t.primary_key] for t in specs]
    fks = [[index[(t.name, c)], index[(rt, rc)]] for t in specs for c, rt, rc in t.foreign_keys]
    readable = [[ti, c.replace("_", " ")] if ti >= 0 else [ti, c] for ti, c in cols]
    return {
        "db_id": db_id,
        "table_names_original": [t.name for t in specs],
        "table_names": [t.name.replace("_", " ") for t in specs],
        "column_names_original": cols,
        "column_names": readable,
        "column_types": types,
        "primary_keys": pks,
        "foreign_keys": fks,
    }


def _write_databases(out_dir: Path, rng: random.Random
                     ) -> tuple[list[dict[str, Any]], dict[str, dict[str, list[tuple]]]]:
    """Build and write the four databases; their tables.json entries and rows by database."""
    tables_json, rows_by_db = [], {}
    for db_id, build in BUILDERS.items():
        specs, rows = build(rng)
        rows_by_db[db_id] = rows
        _write_db(out_dir / "database" / db_id / f"{db_id}.sqlite", specs, rows)
        tables_json.append(_tables_entry(db_id, specs))
    return tables_json, rows_by_db


def generate_examples(
    rows_by_db: dict[str, dict[str, list[tuple]]], rng: random.Random, per_template: int
) -> list[dict[str, str]]:
    """Up to ``per_template`` distinct (question, query) pairs for every template and phrasing."""
    out = []
    for db_id, templates in TEMPLATES.items():
        rows = rows_by_db[db_id]
        for tpl in templates:
            seen: set[str] = set()
            tries = 0
            while len(seen) < per_template and tries < per_template * 20:
                tries += 1
                slots = tpl.slots(rng, rows) if tpl.slots else {}
                phrasing = rng.choice(tpl.phrasings)
                question = phrasing.format(**slots)
                if question in seen:
                    continue
                seen.add(question)
                sql_slots = {k: str(v).replace("'", "''") for k, v in slots.items()}
                out.append({"db_id": db_id, "question": question, "query": tpl.sql.format(**sql_slots)})
    return out


def build_sample_dataset(out_dir: str | Path, seed: int = 0, per_template: int = 64,
                         dev_fraction: float = 0.1) -> dict[str, int]:
    """Write the whole Spider-layout sample dataset to ``out_dir``; return split sizes."""
    out_dir = Path(out_dir)
    rng = random.Random(seed)
    with atomic_path(out_dir, is_dir=True) as tmp:
        tables_json, rows_by_db = _write_databases(tmp, rng)
        examples = generate_examples(rows_by_db, rng, per_template)
        rng.shuffle(examples)
        # Hold out whole question texts: a dev question never appears in train.
        n_dev = int(len(examples) * dev_fraction)
        dev, train = examples[:n_dev], examples[n_dev:]
        dev_questions = {e["question"] for e in dev}
        train = [e for e in train if e["question"] not in dev_questions]
        write_json(tmp / "tables.json", tables_json)
        write_json(tmp / "train_spider.json", train)
        write_json(tmp / "dev.json", dev)
        (tmp / "README.md").write_text(
            "# Built-in sample data\n\nSynthetic text-to-SQL data in Spider's layout, made by "
            "`python -m text2sql.data.sample data/sample` (deterministic from the seed). Four "
            "invented databases (school, library, shop, clinic); no real personal data.\n\n"
            f"- train_spider.json: {len(train)} examples\n- dev.json: {len(dev)} examples "
            "(no question text shared with train)\n- tables.json, database/<db_id>/<db_id>.sqlite\n",
            encoding="utf-8",
        )
    return {"train": len(train), "dev": len(dev)}


def generate_conversations(rows_by_db: dict[str, dict[str, list[tuple]]], rng: random.Random,
                           per_chain: int) -> list[dict[str, Any]]:
    """Up to ``per_chain`` distinct SParC-style conversations (2 turns up to the chain's
    length) for every chain: ``{database_id, interaction: [{utterance, query}], final}``."""
    out = []
    for db_id, chains in CHAINS.items():
        rows = rows_by_db[db_id]
        for chain in chains:
            seen: set[tuple[str, ...]] = set()
            tries = 0
            while len(seen) < per_chain and tries < per_chain * 20:
                tries += 1
                slots = chain.slots(rng, rows)
                sql_slots = {k: str(v).replace("'", "''") for k, v in slots.items()}
                length = rng.randint(2, len(chain.turns))
                interaction = [{"utterance": rng.choice(phrasings).format(**slots),
                                "query": sql.format(**sql_slots)}
                               for phrasings, sql in chain.turns[:length]]
                text = tuple(t["utterance"] for t in interaction)
                if text in seen:
                    continue
                seen.add(text)
                out.append({"database_id": db_id, "interaction": interaction,
                            "final": {"utterance": " ".join(text),
                                      "query": interaction[-1]["query"]}})
    return out


def build_conversation_dataset(out_dir: str | Path, seed: int = 0, per_chain: int = 24,
                               dev_fraction: float = 0.1) -> dict[str, int]:
    """Write the multi-turn sample in SParC's layout to ``out_dir``; return split sizes.

    Its databases are those of :func:`build_sample_dataset` with the same seed (copied,
    so the folder is one DVC dependency); the conversations are drawn with their own
    random stream, so the single-turn sample does not change.
    """
    out_dir = Path(out_dir)
    rng = random.Random(seed)
    with atomic_path(out_dir, is_dir=True) as tmp:
        tables_json, rows_by_db = _write_databases(tmp, rng)
        conv_rng = random.Random(f"conversations-{seed}")
        conversations = generate_conversations(rows_by_db, conv_rng, per_chain)
        conv_rng.shuffle(conversations)
        # Conversations are distinct by their text, so no dev conversation is in train.
        n_dev = int(len(conversations) * dev_fraction)
        dev, train = conversations[:n_dev], conversations[n_dev:]
        write_json(tmp / "tables.json", tables_json)
        write_json(tmp / "train.json", train)
        write_json(tmp / "dev.json", dev)
        turns = {name: sum(len(c["interaction"]) for c in split)
                 for name, split in (("train", train), ("dev", dev))}
        (tmp / "README.md").write_text(
            "# Built-in multi-turn sample data\n\nSynthetic conversations in SParC's layout, "
            "made by `python -m text2sql.data.sample --conversations data/sample-sparc` "
            "(deterministic from the seed), on the four databases of data/sample (copied). "
            "Each conversation asks a question, then refines a filter, adds a condition, or "
            "switches to a count or an order.\n\n"
            f"- train.json: {len(train)} conversations, {turns['train']} turns\n"
            f"- dev.json: {len(dev)} conversations, {turns['dev']} turns "
            "(no conversation text shared with train)\n"
            "- tables.json, database/<db_id>/<db_id>.sqlite\n",
            encoding="utf-8",
        )
    return {"train": len(train), "dev": len(dev), **{f"{k}_turns": v for k, v in turns.items()}}


def synsql_cot(question: str, query: str) -> str:
    """A made-up chain of thought in SynSQL's shape: steps, then the query in a ```sql block."""
    tables = sorted({w for w in query.replace(",", " ").split()
                     if w.islower() and w.isidentifier() and len(w) > 3})[:4]
    return (f"To answer \"{question}\", we need to find which tables hold the data.\n\n"
            f"1. **Identify the tables**: the question involves {', '.join(tables) or 'one table'}."
            "\n2. **Choose the columns**: only what the question asks for goes in the SELECT "
            "clause.\n3. **Apply the conditions**: the filters and joins follow the question's "
            "wording.\n\nPutting this together, the SQL query is:\n"
            f"```sql\n{query}\n```")


def build_synsql_dataset(out_dir: str | Path, n_examples: int, seed: int = 0) -> Path:
    """Write ``n_examples`` in OmniSQL's SynSQL-2.5M layout to ``out_dir``; return it.

    ``data.json`` (one JSON array, written one example at a time, so a million-example file
    costs no memory), ``tables.json`` and ``databases/<db_id>/<db_id>.sqlite``: the sample's
    four databases and questions, repeated with SynSQL's fields and a made-up chain of thought.
    For tests and benchmarks.
    """
    import json

    out_dir = Path(out_dir)
    rng = random.Random(seed)
    with atomic_path(out_dir, is_dir=True) as tmp:
        tables_json, rows_by_db = _write_databases(tmp, rng)
        (tmp / "database").rename(tmp / "databases")
        write_json(tmp / "tables.json", tables_json)
        base = generate_examples(rows_by_db, rng, 64)
        rng.shuffle(base)
        styles = ["Formal", "Colloquial", "Imperative", "Interrogative", "Concise"]
        with (tmp / "data.json").open("w", encoding="utf-8") as f:
            f.write("[\n")
            for k in range(n_examples):
                e = base[k % len(base)]
                row = {"db_id": e["db_id"], "sql_complexity": "Moderate",
                       "question_style": styles[k % len(styles)], "question": e["question"],
                       "external_knowledge": "", "cot": synsql_cot(e["question"], e["query"]),
                       "sql": e["query"]}
                f.write(("" if k == 0 else ",\n") + json.dumps(row, indent=2, ensure_ascii=False))
            f.write("\n]\n")
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to (re)write, e.g. data/sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-template", type=int, default=64,
                        help="distinct questions per template (fewer where values run out)")
    parser.add_argument("--conversations", action="store_true",
                        help="write the multi-turn sample (SParC layout) instead, "
                             "e.g. to data/sample-sparc")
    args = parser.parse_args()
    if args.conversations:
        sizes = build_conversation_dataset(args.out_dir, seed=args.seed)
        print(f"wrote {args.out_dir}: {sizes['train']} train conversations "
              f"({sizes['train_turns']} turns), {sizes['dev']} dev ({sizes['dev_turns']} turns)")
        return
    sizes = build_sample_dataset(args.out_dir, seed=args.seed, per_template=args.per_template)
    print(f"wrote {args.out_dir}: {sizes['train']} train, {sizes['dev']} dev examples")


if __name__ == "__main__":
    main()
