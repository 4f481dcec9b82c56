-- A small shop: enough shape (keys, indexes, a view, sequences) for the schema validator to matter.
create table customers (
    id          bigserial primary key,
    email       text not null unique,
    name        text not null,
    created_at  timestamptz not null default now()
);
create table products (
    id          serial primary key,
    sku         text not null unique,
    title       text not null,
    price_cents integer not null check (price_cents >= 0)
);
create table orders (
    id          bigserial primary key,
    customer_id bigint not null references customers(id),
    status      text not null default 'new',
    total_cents integer not null,
    created_at  timestamptz not null default clock_timestamp()
);
create index orders_customer_idx on orders (customer_id);
create index orders_created_idx on orders (created_at);
create table order_items (
    order_id    bigint not null references orders(id) on delete cascade,
    product_id  integer not null references products(id),
    quantity    integer not null check (quantity > 0),
    primary key (order_id, product_id)
);
create view order_totals as
    select customer_id, count(*) as orders, sum(total_cents) as total_cents from orders group by customer_id;

insert into customers (email, name)
    select 'customer' || g || '@example.com', 'Customer ' || g from generate_series(1, 2000) g;
insert into products (sku, title, price_cents)
    select 'SKU-' || g, 'Product ' || g, (g * 37) % 10000 from generate_series(1, 200) g;
insert into orders (customer_id, status, total_cents, created_at)
    select 1 + (g % 2000), 'paid', (g * 91) % 50000, now() - interval '30 days' + g * interval '1 minute'
    from generate_series(1, 5000) g;
insert into order_items (order_id, product_id, quantity)
    select o.id, 1 + (o.id % 200), 1 + (o.id % 3) from orders o;
